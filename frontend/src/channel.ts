/**
 * Stream paths: the one place the frontend turns a query into a Live channel path.
 *
 *   custom-<lower>-<upper>-<tick ms>                      uniform generator, one series
 *   custom-<lower>-<upper>-<tick ms>-<generator>-<series>
 *
 * The backend's grammar (services/common/channels.py): numbers are plain decimals
 * (`-?\d{1,15}(\.\d{1,9})?`, no exponent), generator names `[a-z][a-z0-9_]{0,31}`, and
 * the whole path at most 120 characters, which any query passing `validate` stays under
 * (at most 113). Everything that makes two streams differ is in the path, because
 * Grafana runs one backend stream per path.
 */
import { DEFAULT_QUERY, Limits, QueryFields, StreamQuery } from './types';

const NUMBER = /^-?\d{1,15}(\.\d{1,9})?$/;
const GENERATOR = /^[a-z][a-z0-9_]{0,31}$/;

export type QueryErrors = Partial<Record<keyof QueryFields, string>>;

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

export function withDefaults(query: StreamQuery): QueryFields {
  return {
    lowerLimit: query.lowerLimit ?? DEFAULT_QUERY.lowerLimit,
    upperLimit: query.upperLimit ?? DEFAULT_QUERY.upperLimit,
    tickInterval: query.tickInterval ?? DEFAULT_QUERY.tickInterval,
    generator: query.generator ?? DEFAULT_QUERY.generator,
    series: query.series ?? DEFAULT_QUERY.series,
  };
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
