import {
  DataFrameJSON,
  DataQueryResponse,
  DataSourceInstanceSettings,
  LoadingState,
  PluginType,
  ScopedVars,
  StreamingDataFrame,
} from '@grafana/data';
import {
  BackendSrv,
  GrafanaLiveSrv,
  LiveDataStreamOptions,
  setBackendSrv,
  setGrafanaLiveSrv,
  setTemplateSrv,
  TemplateSrv,
} from '@grafana/runtime';
import { Observable, of } from 'rxjs';

import { DataSource } from '../src/datasource';
import { StreamOptions, StreamQuery } from '../src/types';

/** Instance settings as Grafana hands them to the datasource constructor. */
export function instanceSettings(jsonData: StreamOptions = {}): DataSourceInstanceSettings<StreamOptions> {
  return {
    id: 1,
    uid: 'zs-uid',
    type: 'zmqstream-stream-datasource',
    name: 'zmqstream',
    access: 'proxy',
    readOnly: false,
    jsonData,
    meta: {
      id: 'zmqstream-stream-datasource',
      name: 'zmqstream',
      type: PluginType.datasource,
      info: {
        author: { name: 'zmqstream' },
        description: '',
        links: [],
        logos: { small: '', large: '' },
        screenshots: [],
        updated: '',
        version: '0.1.0',
      },
      module: '',
      baseUrl: '',
    },
  };
}

export function datasource(jsonData: StreamOptions = {}): DataSource {
  return new DataSource(instanceSettings(jsonData));
}

/**
 * Grafana's template service at its boundary: `$name` and `${name}` from dashboard
 * variables, scoped variables (a repeated panel's) first, unknown names left as typed.
 */
export function useVariables(variables: Record<string, string>): void {
  const replace = (target?: string, scopedVars?: ScopedVars) =>
    (target ?? '').replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, braced?: string, bare?: string) => {
      const name = (braced ?? bare)!;
      const scoped = scopedVars?.[name]?.value;
      return scoped !== undefined ? String(scoped) : (variables[name] ?? whole);
    });
  setTemplateSrv({
    getVariables: () => [],
    replace,
    containsTemplate: (target?: string) => /\$/.test(target ?? ''),
    updateTimeRange: () => {},
  } as unknown as TemplateSrv);
}

/**
 * Grafana Live at its boundary: each getDataStream gets a real StreamingDataFrame seeded
 * with the options' frame, as Grafana's LiveDataStream does, and `publish` delivers what
 * Grafana relays on a channel (SubscribeStream's answer, then RunStream's packets).
 */
export class FakeLive {
  readonly opened: LiveDataStreamOptions[] = [];
  readonly closed: string[] = [];
  private readonly streams: Array<{ path: string; frame: StreamingDataFrame; emit: () => void }> = [];

  getDataStream = (options: LiveDataStreamOptions): Observable<DataQueryResponse> =>
    new Observable<DataQueryResponse>((subscriber) => {
      this.opened.push(options);
      const frame = StreamingDataFrame.empty(options.buffer);
      if (options.frame) {
        frame.push(structuredClone(options.frame));
      }
      const emit = () => subscriber.next({ key: options.key, state: LoadingState.Streaming, data: [frame] });
      const entry = { path: options.addr.path, frame, emit };
      this.streams.push(entry);
      emit();
      return () => {
        this.closed.push(options.addr.path);
        this.streams.splice(this.streams.indexOf(entry), 1);
      };
    });

  publish(path: string, message: DataFrameJSON): void {
    for (const stream of this.streams.filter((s) => s.path === path)) {
      stream.frame.push(structuredClone(message));
      stream.emit();
    }
  }

  install(): this {
    setGrafanaLiveSrv(this as unknown as GrafanaLiveSrv);
    return this;
  }
}

/** Grafana's backend at its boundary: /api/ds/query answers `results`, and every request is kept. */
export function useBackend(results: unknown): Array<{ url: string; data: { from: string; to: string; queries: StreamQuery[] } }> {
  const requests: Array<{ url: string; data: { from: string; to: string; queries: StreamQuery[] } }> = [];
  setBackendSrv({
    fetch: (options: { url: string; data: { from: string; to: string; queries: StreamQuery[] } }) => {
      requests.push(options);
      return of({ data: results, status: 200, ok: true, headers: new Headers(), redirected: false, statusText: 'OK', type: 'basic', url: options.url, config: options });
    },
  } as unknown as BackendSrv);
  return requests;
}
