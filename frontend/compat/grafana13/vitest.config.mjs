// The frontend's tests again, against Grafana 13.2 (React 19): the packages this folder's
// lockfile installs stand in for frontend/node_modules' Grafana 12.4 (React 18).
//   cd frontend && npx vitest run --config compat/grafana13/vitest.config.mjs
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, mergeConfig } from 'vitest/config';

import base from '../../vitest.config.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules');
/** Everything that must come from one Grafana/React set: ours, and what imports React for us. */
const SWAPPED = /^(react|react-dom|rxjs|@grafana\/[a-z-]+|@testing-library\/[a-z-]+)(\/.*)?$/;

export default mergeConfig(
  base,
  defineConfig({
    root: join(here, '..', '..'),
    resolve: { alias: [{ find: SWAPPED, replacement: `${modules}/$1$2` }] },
    test: { env: { EXPECT_REACT_MAJOR: '19' }, server: { deps: { inline: [/@testing-library\//] } } },
  })
);
