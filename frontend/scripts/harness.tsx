// A page that renders the real QueryEditor with real @grafana/ui, for the browser check.
import { createTheme, PluginType } from '@grafana/data';
import { setTemplateSrv, TemplateSrv } from '@grafana/runtime';
import { GlobalStyles, ThemeContext } from '@grafana/ui';
import React, { useState } from 'react';
import { createRoot } from 'react-dom/client';

import { QueryEditor } from '../src/components/QueryEditor';
import { DataSource } from '../src/datasource';
import { StreamCatalog, StreamQuery } from '../src/types';

/** A dashboard's variables, as Grafana's template service resolves them. */
const VARIABLES: Record<string, string> = { lower: '-5', upper: '5', tick: '250' };
setTemplateSrv({
  getVariables: () => [],
  replace: (target?: string) => (target ?? '').replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a?: string, b?: string) => VARIABLES[(a ?? b)!] ?? whole),
  containsTemplate: () => false,
  updateTimeRange: () => {},
} as unknown as TemplateSrv);

/** The real datasource, answering the editor's resource calls without a Grafana server behind it. */
class HarnessDataSource extends DataSource {
  async catalog(): Promise<StreamCatalog> {
    return {
      generators: [
        { name: 'uniform', description: 'a random value in [lower, upper] every tick' },
        { name: 'random_walk', description: 'a bounded random walk' },
        { name: 'sine', description: 'a sine between lower and upper' },
      ],
      sources: [
        { name: 'host', fields: ['cpu', 'memory_used', 'net_rx', 'net_tx', 'disk_read'].map((name) => ({ name, type: 'number' })) },
        { name: 'meter', fields: [] },
      ],
      published: [
        { name: 'lab.door', fields: [{ name: 'temp', type: 'number' }, { name: 'room', type: 'string' }, { name: 'open', type: 'boolean' }] },
        { name: 'deploys', fields: [{ name: 'message', type: 'string' }, { name: 'service', type: 'string' }] },
      ],
      problems: [],
    };
  }
  async effectiveLimits() {
    return this.limits;
  }
}
const datasource = new HarnessDataSource({
  id: 1,
  uid: 'zs-uid',
  type: 'zmqstream-stream-datasource',
  name: 'zmqstream',
  access: 'proxy',
  readOnly: false,
  jsonData: {},
  meta: { id: 'zmqstream-stream-datasource', name: 'zmqstream', type: PluginType.datasource, info: {} },
} as unknown as ConstructorParameters<typeof DataSource>[0]);

function Page() {
  // `?query=<json>` opens the editor on a saved query, as a dashboard does; `?theme=light` Grafana's light theme
  const params = new URLSearchParams(window.location.search);
  const saved = params.get('query');
  const [query, setQuery] = useState<StreamQuery>(saved ? JSON.parse(saved) : { refId: 'A', lowerLimit: 10, upperLimit: 20, tickInterval: 100 });
  const [runs, setRuns] = useState(0);
  const theme = createTheme({ colors: { mode: params.get('theme') === 'light' ? 'light' : 'dark' } });
  return (
    <ThemeContext.Provider value={theme}>
      <GlobalStyles />
      <div style={{ background: theme.colors.background.primary, color: theme.colors.text.primary, padding: 16, fontFamily: theme.typography.fontFamily, minHeight: '100vh', boxSizing: 'border-box' }}>
        <h3 style={{ marginTop: 0 }}>zmqstream query editor</h3>
        <div style={{ fontSize: 12, opacity: 0.8, marginBottom: 8 }}>dashboard variables: $lower = -5, $upper = 5, $tick = 250</div>
        <QueryEditor query={query} onChange={setQuery} onRunQuery={() => setRuns((n) => n + 1)} datasource={datasource} />
        <pre data-testid="query" style={{ fontSize: 12, opacity: 0.8 }}>
          {JSON.stringify(query)} · runs: {runs}
        </pre>
      </div>
    </ThemeContext.Provider>
  );
}

createRoot(document.getElementById('root')!).render(<Page />);
