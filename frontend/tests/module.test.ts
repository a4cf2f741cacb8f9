// dist/module.js is an AMD module needing only Grafana's shared packages, and exports `plugin`.
import * as data from '@grafana/data';
import * as runtime from '@grafana/runtime';
import * as schema from '@grafana/schema';
import * as ui from '@grafana/ui';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as react from 'react';
import * as rxjs from 'rxjs';

import SHARED from '../scripts/shared-externals.json';

const MODULES: Record<string, unknown> = {
  react,
  rxjs,
  '@grafana/data': data,
  '@grafana/runtime': runtime,
  '@grafana/ui': ui,
  '@grafana/schema': schema,
};

describe('dist/module.js', () => {
  it('loads as AMD with only shared externals and exports the datasource plugin', () => {
    const code = readFileSync(join(__dirname, '..', 'dist', 'module.js'), 'utf8');
    type Factory = (...deps: unknown[]) => { plugin: data.DataSourcePlugin<data.DataSourceApi> };
    let loaded: { deps: string[]; factory: Factory } | undefined;
    new Function('define', code)((deps: string[], factory: Factory) => {
      loaded = { deps, factory };
    });
    expect(loaded).toBeDefined();
    expect(loaded!.deps.length).toBeGreaterThan(0);
    expect(loaded!.deps.every((dep) => SHARED.includes(dep))).toBe(true);
    const { plugin } = loaded!.factory(...loaded!.deps.map((dep) => MODULES[dep]));
    expect(plugin).toBeInstanceOf(data.DataSourcePlugin);
    expect(plugin.components.QueryEditor).toBeDefined();
    expect(plugin.components.ConfigEditor).toBeDefined();
  });
});
