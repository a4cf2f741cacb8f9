// A page that renders the real QueryEditor with real @grafana/ui, for the browser check.
import { createTheme } from '@grafana/data';
import { GlobalStyles, ThemeContext } from '@grafana/ui';
import React, { useState } from 'react';
import { createRoot } from 'react-dom/client';

import { QueryEditor } from '../src/components/QueryEditor';
import { DataSource } from '../src/datasource';
import { StreamQuery } from '../src/types';

/** The datasource as the editor sees it, without a Grafana server behind it. */
const datasource = {
  limits: { minTickMs: 1, maxTickMs: 3_600_000, maxSeries: 10 },
  generators: async () => [
    { name: 'uniform', description: 'a random value in [lower, upper] every tick' },
    { name: 'random_walk', description: 'a bounded random walk' },
    { name: 'sine', description: 'a sine between lower and upper' },
  ],
  effectiveLimits: async () => ({ minTickMs: 1, maxTickMs: 3_600_000, maxSeries: 10 }),
} as unknown as DataSource;

function Page() {
  const [query, setQuery] = useState<StreamQuery>({ refId: 'A', lowerLimit: 10, upperLimit: 20, tickInterval: 100 });
  const [runs, setRuns] = useState(0);
  const theme = createTheme({ colors: { mode: 'dark' } });
  return (
    <ThemeContext.Provider value={theme}>
      <GlobalStyles />
      <div style={{ background: theme.colors.background.primary, color: theme.colors.text.primary, padding: 16, fontFamily: theme.typography.fontFamily }}>
        <h3 style={{ marginTop: 0 }}>zmqstream query editor</h3>
        <QueryEditor query={query} onChange={setQuery} onRunQuery={() => setRuns((n) => n + 1)} datasource={datasource} />
        <pre data-testid="query" style={{ fontSize: 12, opacity: 0.8 }}>
          {JSON.stringify(query)} · runs: {runs}
        </pre>
      </div>
    </ThemeContext.Provider>
  );
}

createRoot(document.getElementById('root')!).render(<Page />);
