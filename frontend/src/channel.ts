/**
 * Stream paths: the one place the frontend turns a query into a Live channel path.
 *
 *   custom-<lower>-<upper>-<tick ms>                      uniform generator, one series
 *   custom-<lower>-<upper>-<tick ms>-<generator>-<series>
 *   source-<source>-<tick ms>                              a source (kind `source`)
 *   pub-<channel>                                          a published channel (kind `published`)
 *
 * The backend's grammar (services/common/channels.py): numbers are plain decimals
 * (`-?\d{1,15}(\.\d{1,9})?`, no exponent), generator names `[a-z][a-z0-9_]{0,31}`, and
 * the whole path at most 120 characters, which any query passing `validate` stays under
 * (at most 113). Everything that makes two streams differ is in the path, because
 * Grafana runs one backend stream per path: display options too, after the channel
 * (`livePath`), which the backend strips to hold the one canonical channel.
 */
import { DEFAULT_QUERY, DisplayFields, Limits, QueryFields, QueryKind, StreamQuery } from './types';

const NUMBER = /^-?\d{1,15}(\.\d{1,9})?$/;
const GENERATOR = /^[a-z][a-z0-9_]{0,31}$/;
/** A source's name is a generator's; a published channel's `[a-z0-9][a-z0-9_.-]{0,63}`. */
const PUBLISHED = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
/** services/plugin/display.py's limits. */
const MAX_ALIAS_CHARS = 64;
const MAX_UNIT_CHARS = 40;
/** A record field's name (services/common/fields.py) and the most label fields a query may name. */
const FIELD_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;
const MAX_LABELS = 8;
/** Grafana's limit on a channel id, `ds/<uid>/<path>`. */
const MAX_CHANNEL_CHARS = 160;
/** Most rows a panel's buffer keeps, whatever its time range and tick. */
export const MAX_BUFFER_ROWS = 100_000;

export type QueryErrors = Partial<Record<keyof QueryFields | keyof DisplayFields | 'bufferRows' | 'source' | 'channel', string>>;

/** A query's kind; absent means a generator. */
export function kindOf(query: StreamQuery): QueryKind {
  return query.kind === 'source' || query.kind === 'published' ? query.kind : 'generator';
}

/** `x` as the backend's plain decimal, or undefined when the grammar cannot express it exactly. */
export function formatNumber(x: number): string | undefined {
  if (!Number.isFinite(x) || Math.abs(x) >= 1e15) {
    return undefined;
  }
  let text = x.toFixed(9).replace(/\.?0+$/, '');
  if (text === '-0') {
    text = '0';
  }
  return NUMBER.test(text) && Number(text) === x ? text : undefined;
}

/** The channel a query asks for; text that is not a number (an unresolved `$var`) becomes NaN. */
export function withDefaults(query: StreamQuery): QueryFields {
  return {
    lowerLimit: toNumber(query.lowerLimit, DEFAULT_QUERY.lowerLimit),
    upperLimit: toNumber(query.upperLimit, DEFAULT_QUERY.upperLimit),
    tickInterval: toNumber(query.tickInterval, DEFAULT_QUERY.tickInterval),
    generator: (query.generator ?? '').trim() || DEFAULT_QUERY.generator,
    series: toNumber(query.series, DEFAULT_QUERY.series),
  };
}

/** A number field as typed or interpolated: empty means the default. */
export function toNumber(value: number | string | undefined, fallback: number): number;
export function toNumber(value: number | string | undefined, fallback: undefined): number | undefined;
export function toNumber(value: number | string | undefined, fallback: number | undefined): number | undefined {
  if (typeof value === 'number') {
    return value;
  }
  const text = (value ?? '').trim();
  return text === '' ? fallback : Number(text);
}

/** A query's display options; labels and logs belong to event channels (sources, published) only. */
export function displayOf(query: StreamQuery): DisplayFields {
  const events = kindOf(query) !== 'generator';
  const labels = events && Array.isArray(query.labels) ? query.labels.map((l) => String(l).trim()).filter((l) => l !== '') : [];
  return { alias: (query.alias ?? '').trim(), unit: (query.unit ?? '').trim(), labels, logs: events && query.logs === true };
}

/** Everything wrong with a (resolved) query, field by field; empty when it can run. */
export function validateQuery(query: StreamQuery, limits: Limits, datasourceUid: string): QueryErrors {
  const errors: QueryErrors = validateChannel(query, limits);
  const display = displayOf(query);
  for (const [key, limit] of [['alias', MAX_ALIAS_CHARS], ['unit', MAX_UNIT_CHARS]] as const) {
    if (display[key].length > limit) {
      errors[key] = `${key === 'alias' ? 'Alias' : 'Unit'} must be at most ${limit} characters`;
    } else if (/[\u0000-\u001f]/.test(display[key])) {
      errors[key] = `${key === 'alias' ? 'Alias' : 'Unit'} must not contain control characters`;
    }
  }
  const badLabel = display.labels.find((name) => !FIELD_NAME.test(name));
  if (badLabel !== undefined) {
    errors.labels = `Label field ${JSON.stringify(badLabel)} is not a field name (letters, digits, _, . and -, starting with a letter or _)`;
  } else if (display.labels.length > MAX_LABELS) {
    errors.labels = `At most ${MAX_LABELS} label fields`;
  }
  if (Object.keys(errors).length === 0) {
    const channel = `ds/${datasourceUid}/${queryLivePath(query)}`;
    if (channel.length > MAX_CHANNEL_CHARS) {
      errors.alias = `Alias, unit and labels make the stream's channel ${channel.length} characters, over Grafana's ${MAX_CHANNEL_CHARS}: shorten them`;
    }
  }
  const rows = toNumber(query.bufferRows, undefined);
  if (rows !== undefined && !(Number.isInteger(rows) && rows >= 1 && rows <= MAX_BUFFER_ROWS)) {
    errors.bufferRows = `Buffer must be empty (the panel's time range) or a whole number of rows from 1 to ${MAX_BUFFER_ROWS}`;
  }
  return errors;
}

/** What is wrong with a query's channel, whatever its kind; empty when it can stream. */
function validateChannel(query: StreamQuery, limits: Limits): QueryErrors {
  const kind = kindOf(query);
  if (kind === 'generator') {
    return validate(withDefaults(query), limits);
  }
  const errors: QueryErrors = {};
  if (kind === 'published') {
    if (!PUBLISHED.test((query.channel ?? '').trim())) {
      errors.channel = 'Channel names are lower-case letters, digits, _, . and - (at most 64, starting with a letter or digit)';
    }
    return errors;
  }
  if (!GENERATOR.test((query.source ?? '').trim())) {
    errors.source = 'Source names are lower-case letters, digits and _ (starting with a letter)';
  }
  const tick = withDefaults(query).tickInterval;
  if (formatNumber(tick) === undefined || tick < limits.minTickMs || tick > limits.maxTickMs) {
    errors.tickInterval = `Tick interval must be between ${limits.minTickMs} and ${limits.maxTickMs} ms`;
  }
  return errors;
}

/** The channel path of a valid query of any kind. */
export function channelPath(query: StreamQuery): string {
  switch (kindOf(query)) {
    case 'published':
      return `pub-${(query.channel ?? '').trim()}`;
    case 'source':
      return `source-${(query.source ?? '').trim()}-${formatNumber(withDefaults(query).tickInterval) ?? 'NaN'}`;
    default:
      return streamPath(withDefaults(query));
  }
}

/** The Live path of a valid query of any kind, display options included (see livePath). */
export function queryLivePath(query: StreamQuery): string {
  return withDisplay(channelPath(query), displayOf(query));
}

/** What is wrong with a query, field by field; empty when it can stream. */
export function validate(fields: QueryFields, limits: Limits): QueryErrors {
  const errors: QueryErrors = {};
  const lower = formatNumber(fields.lowerLimit);
  const upper = formatNumber(fields.upperLimit);
  if (lower === undefined) {
    errors.lowerLimit = 'Lower limit must be a plain number (up to 9 decimals, below 10^15)';
  }
  if (upper === undefined) {
    errors.upperLimit = 'Upper limit must be a plain number (up to 9 decimals, below 10^15)';
  }
  if (lower !== undefined && upper !== undefined && !(fields.lowerLimit < fields.upperLimit)) {
    errors.upperLimit = 'Upper limit must be above the lower limit';
  }
  const tick = fields.tickInterval;
  if (formatNumber(tick) === undefined || tick < limits.minTickMs || tick > limits.maxTickMs) {
    errors.tickInterval = `Tick interval must be between ${limits.minTickMs} and ${limits.maxTickMs} ms`;
  }
  if (!Number.isInteger(fields.series) || fields.series < 1 || fields.series > limits.maxSeries) {
    errors.series = `Series must be a whole number from 1 to ${limits.maxSeries}`;
  }
  if (!GENERATOR.test(fields.generator)) {
    errors.generator = 'Generator names are lower-case letters, digits and _';
  }
  return errors;
}

/** The Live channel path of a valid query. */
export function streamPath(fields: QueryFields): string {
  const numbers = [fields.lowerLimit, fields.upperLimit, fields.tickInterval].map((x) => formatNumber(x) ?? 'NaN');
  const head = `custom-${numbers.join('-')}`;
  if (fields.generator === DEFAULT_QUERY.generator && fields.series === 1) {
    return head;
  }
  return `${head}-${fields.generator}-${fields.series}`;
}

/**
 * The Live path of a valid query: its channel, then display options as base64url JSON
 * (`/display=…`), which the backend strips to hold the canonical channel. Same options,
 * same path, so panels that show a channel alike share one stream.
 */
export function livePath(fields: QueryFields, display: DisplayFields): string {
  return withDisplay(streamPath(fields), display);
}

function withDisplay(path: string, display: DisplayFields): string {
  const options: Partial<DisplayFields> = {};
  if (display.alias) {
    options.alias = display.alias;
  }
  if (display.unit) {
    options.unit = display.unit;
  }
  if (display.labels.length > 0) {
    options.labels = display.labels;
  }
  if (display.logs) {
    options.logs = true;
  }
  if (Object.keys(options).length === 0) {
    return path;
  }
  const bytes = new TextEncoder().encode(JSON.stringify(options));
  const base64 = btoa(String.fromCharCode(...bytes));
  return `${path}/display=${base64.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}`;
}

/** The limits a datasource's settings impose (the backend may be stricter still). */
export function limitsFrom(options: { minTickMs?: number; maxSeries?: number } | undefined, base: Limits): Limits {
  return {
    minTickMs: Math.max(base.minTickMs, positive(options?.minTickMs) ?? base.minTickMs),
    maxTickMs: base.maxTickMs,
    maxSeries: Math.min(base.maxSeries, positive(options?.maxSeries) ?? base.maxSeries),
  };
}

function positive(x: number | undefined): number | undefined {
  return typeof x === 'number' && Number.isFinite(x) && x > 0 ? x : undefined;
}
