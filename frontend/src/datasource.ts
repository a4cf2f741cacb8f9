import {
  DataFrame,
  DataQueryError,
  DataQueryRequest,
  DataQueryResponse,
  DataSourceInstanceSettings,
  dataFrameToJSON,
  dateTime,
  FieldType,
  LiveChannelScope,
  MetricFindValue,
  ScopedVars,
  StreamingFrameAction,
  StreamingFrameOptions,
} from '@grafana/data';
import { DataSourceWithBackend, getGrafanaLiveSrv, getTemplateSrv } from '@grafana/runtime';
import { map, merge, Observable, of, switchMap } from 'rxjs';

import { kindOf, limitsFrom, MAX_BUFFER_ROWS, queryLivePath, toNumber, validateQuery, withDefaults } from './channel';
import { catalogFrom, VARIABLE_QUERIES, variableValues } from './catalog';
import { DEFAULT_LIMITS, FALLBACK_CATALOG, Limits, StreamCatalog, StreamMode, StreamOptions, StreamQuery } from './types';

/**
 * QueryData stops this far before now and the subscription brings the rest, so the
 * history never holds a tick the running stream has yet to relay (it would show twice).
 */
export const LIVE_MARGIN_MS = 1000;

const TEXT_FIELDS = ['generator', 'alias', 'unit', 'source', 'channel'] as const;
const NUMBER_FIELDS = ['lowerLimit', 'upperLimit', 'tickInterval', 'series', 'bufferRows'] as const;

export class DataSource extends DataSourceWithBackend<StreamQuery, StreamOptions> {
  readonly limits: Limits;

  constructor(settings: DataSourceInstanceSettings<StreamOptions>) {
    super(settings);
    this.limits = limitsFrom(settings.jsonData, DEFAULT_LIMITS);
  }

  /** Template variables in every field; a number field whose value is a number becomes one. */
  applyTemplateVariables(query: StreamQuery, scopedVars: ScopedVars): StreamQuery {
    const templates = getTemplateSrv();
    const out: StreamQuery = { ...query };
    for (const key of TEXT_FIELDS) {
      const value = query[key];
      if (typeof value === 'string') {
        out[key] = templates.replace(value, scopedVars);
      }
    }
    for (const key of NUMBER_FIELDS) {
      const value = query[key];
      if (typeof value === 'string') {
        const text = templates.replace(value, scopedVars).trim();
        out[key] = text !== '' && Number.isFinite(Number(text)) ? Number(text) : text;
      }
    }
    if (kindOf(query) === 'generator') {
      delete out.labels; // an event channel's options, left over from another kind: not the backend's concern
      delete out.logs;
    } else if (Array.isArray(query.labels)) {
      // a multi-value variable becomes one label field per value
      out.labels = query.labels.flatMap((name) => templates.replace(String(name), scopedVars, 'csv').split(','));
    }
    return out;
  }

  /** Hidden queries run nothing; the rest are checked once their variables are resolved. */
  filterQuery(query: StreamQuery): boolean {
    return !query.hide;
  }

  /**
   * The panel's range from QueryData (strided to maxDataPoints, the values the stream
   * sent), then, if the range reaches now, one Live stream per query that carries on
   * from the history's last row: the subscription says `{"after": <ms>}` and the backend
   * answers the rows between that and the live stream. Grafana's own `meta.channel`
   * subscription cannot say so, and would repeat the backend's last minute on top.
   */
  query(request: DataQueryRequest<StreamQuery>): Observable<DataQueryResponse> {
    const errors: DataQueryError[] = [];
    const runnable: StreamQuery[] = [];
    for (const target of request.targets.filter((t) => this.filterQuery(t))) {
      const query = this.applyTemplateVariables(target, request.scopedVars);
      const problems = Object.values(validateQuery(query, this.limits, this.uid));
      if (problems.length > 0) {
        errors.push({ refId: target.refId, message: `${target.refId}: ${problems.join('; ')}` });
      } else {
        runnable.push(query);
      }
    }
    if (runnable.length === 0) {
      return of({ data: [], errors, error: errors[0] });
    }
    const now = Date.now();
    const live = request.range.to.valueOf() >= now - LIVE_MARGIN_MS;
    const from = request.range.from.valueOf();
    const to = live ? dateTime(Math.max(from, Math.min(request.range.to.valueOf(), now - LIVE_MARGIN_MS))) : request.range.to;
    const history = super.query({ ...request, targets: runnable, range: { ...request.range, to } });
    return history.pipe(
      switchMap((response) => {
        const answered = { ...response, errors: [...errors, ...(response.errors ?? [])] };
        if (!live) {
          return of(answered);
        }
        const streams = runnable.flatMap((query) => {
          const frame = (response.data as DataFrame[]).find((f) => f.refId === query.refId);
          return frame ? [this.stream(request, query, frame)] : [];
        });
        const failed = answered.errors.length > 0 ? [of({ data: [], errors: answered.errors, error: answered.errors[0] })] : [];
        return streams.length + failed.length > 0 ? merge(...failed, ...streams) : of(answered);
      })
    );
  }

  /** The Live stream of one query, starting from its history frame. */
  private stream(request: DataQueryRequest<StreamQuery>, query: StreamQuery, history: DataFrame): Observable<DataQueryResponse> {
    const times = history.fields.find((f) => f.type === FieldType.time)?.values ?? [];
    const last = times.length > 0 ? Number(times[times.length - 1]) : undefined;
    const stream = getGrafanaLiveSrv().getDataStream({
      key: `${request.requestId}-${query.refId}`,
      // `stream` is Grafana 12's name for what older versions read as `namespace`: set both.
      addr: {
        scope: LiveChannelScope.DataSource,
        stream: this.uid,
        namespace: this.uid,
        path: queryLivePath(query),
        data: last === undefined ? undefined : { after: last },
      },
      frame: dataFrameToJSON(history),
      buffer: bufferOptions(request, query),
    });
    return query.mode === StreamMode.Latest ? stream.pipe(map(latestOnly)) : stream;
  }

  /**
   * Every stream the backend can name: generators, sources with their fields, published
   * channels the recorder knows (its `streams` resource), or the built-ins and why not.
   */
  async catalog(): Promise<StreamCatalog> {
    try {
      return catalogFrom(await this.getResource<unknown>('streams'));
    } catch (error) {
      return { ...FALLBACK_CATALOG, problems: [`the backend's stream list: ${errorText(error)}`] };
    }
  }

  /**
   * A dashboard variable's values (Grafana's query variable): `published`, `sources` or
   * `generators` lists those names, so a dashboard can repeat a panel per published channel.
   */
  async metricFindQuery(query: string, options?: { scopedVars?: ScopedVars }): Promise<MetricFindValue[]> {
    const asked = getTemplateSrv().replace(String(query ?? ''), options?.scopedVars).trim() || 'published';
    if (!VARIABLE_QUERIES.includes(asked)) {
      throw new Error(`unknown variable query ${JSON.stringify(asked)}: use one of ${VARIABLE_QUERIES.join(', ')}`);
    }
    const found = await this.catalog();
    if (found.problems.length > 0 && variableValues(found, asked).length === 0) {
      throw new Error(found.problems.join('; '));
    }
    return variableValues(found, asked).map((text) => ({ text, value: text }));
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

/**
 * The panel's buffer: its whole time range (a panel over the last minute keeps the last
 * minute), or the query's own row count; Latest value keeps the newest row only.
 */
export function bufferOptions(request: DataQueryRequest<StreamQuery>, query: StreamQuery): Partial<StreamingFrameOptions> {
  if (query.mode === StreamMode.Latest) {
    return { maxLength: 1, action: StreamingFrameAction.Replace };
  }
  const rowsAsked = toNumber(query.bufferRows, undefined);
  if (rowsAsked !== undefined) {
    return { maxLength: rowsAsked, action: StreamingFrameAction.Append };
  }
  const spanMs = Math.max(1, request.range.to.valueOf() - request.range.from.valueOf());
  // A published channel has no tick: its rows come when they come, so the range alone bounds them.
  const tickMs = kindOf(query) === 'published' ? 1 : withDefaults(query).tickInterval;
  const rows = Math.ceil(spanMs / tickMs) + 1;
  return {
    maxDelta: spanMs,
    maxLength: Math.min(MAX_BUFFER_ROWS, Math.max(rows, request.maxDataPoints ?? 0, 100)),
    action: StreamingFrameAction.Append,
  };
}

/** Each frame cut to its newest row: Grafana's Replace action keeps a whole packet, which may hold several. */
function latestOnly(response: DataQueryResponse): DataQueryResponse {
  const data = (response.data as DataFrame[]).map((frame) => ({
    ...frame,
    length: Math.min(1, frame.length),
    fields: frame.fields.map((field) => ({ ...field, values: field.values.slice(-1) })),
  }));
  return { ...response, data };
}

function errorText(error: unknown): string {
  const data = (error as { data?: { error?: unknown; message?: unknown } })?.data;
  const text = data?.error ?? data?.message ?? (error as { message?: unknown })?.message ?? error;
  return String(text);
}
