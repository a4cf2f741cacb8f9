import {
  DataQueryRequest,
  DataQueryResponse,
  DataSourceInstanceSettings,
  LiveChannelScope,
  StreamingFrameAction,
  StreamingFrameOptions,
} from '@grafana/data';
import { DataSourceWithBackend, getGrafanaLiveSrv } from '@grafana/runtime';
import { merge, Observable, of } from 'rxjs';

import { limitsFrom, streamPath, validate, withDefaults } from './channel';
import { BUILTIN_GENERATORS, DEFAULT_LIMITS, GeneratorInfo, Limits, QueryFields, StreamOptions, StreamQuery } from './types';

/** Most rows a panel's buffer keeps, whatever its time range and tick. */
export const MAX_BUFFER_ROWS = 100_000;

export class DataSource extends DataSourceWithBackend<StreamQuery, StreamOptions> {
  readonly limits: Limits;

  constructor(settings: DataSourceInstanceSettings<StreamOptions>) {
    super(settings);
    this.limits = limitsFrom(settings.jsonData, DEFAULT_LIMITS);
  }

  /** Hidden or invalid queries open no stream. */
  filterQuery(query: StreamQuery): boolean {
    return !query.hide && Object.keys(validate(withDefaults(query), this.limits)).length === 0;
  }

  /** One Live stream per query, merged: Grafana runs the backend's RunStream per path. */
  query(request: DataQueryRequest<StreamQuery>): Observable<DataQueryResponse> {
    const live = getGrafanaLiveSrv();
    const streams = request.targets
      .filter((target) => this.filterQuery(target))
      .map((target) => {
        const fields = withDefaults(target);
        return live.getDataStream({
          key: `${request.requestId}-${target.refId}`,
          // `stream` is Grafana 12's name for what older versions read as `namespace`: set both.
          addr: { scope: LiveChannelScope.DataSource, stream: this.uid, namespace: this.uid, path: streamPath(fields) },
          buffer: bufferOptions(request, fields),
        });
      });
    return streams.length > 0 ? merge(...streams) : of({ data: [] });
  }

  /** Generators the backend runs (custom ones included), or the built-ins if it cannot say. */
  async generators(): Promise<GeneratorInfo[]> {
    try {
      const answer = await this.getResource<{ generators: GeneratorInfo[] }>('generators');
      return Array.isArray(answer?.generators) && answer.generators.length > 0 ? answer.generators : BUILTIN_GENERATORS;
    } catch {
      return BUILTIN_GENERATORS;
    }
  }

  /** This datasource's effective limits from the backend, or what its settings say. */
  async effectiveLimits(): Promise<Limits> {
    try {
      const answer = await this.getResource<Limits>('limits');
      return limitsFrom({ minTickMs: answer.minTickMs, maxSeries: answer.maxSeries }, { ...this.limits, maxTickMs: answer.maxTickMs || this.limits.maxTickMs });
    } catch {
      return this.limits;
    }
  }
}

/** Keep the panel's whole time range: a panel over the last minute keeps the last minute. */
export function bufferOptions(request: DataQueryRequest<StreamQuery>, fields: QueryFields): Partial<StreamingFrameOptions> {
  const spanMs = Math.max(1, request.range.to.valueOf() - request.range.from.valueOf());
  const rows = Math.ceil(spanMs / fields.tickInterval) + 1;
  return {
    maxDelta: spanMs,
    maxLength: Math.min(MAX_BUFFER_ROWS, Math.max(rows, request.maxDataPoints ?? 0, 100)),
    action: StreamingFrameAction.Append,
  };
}
