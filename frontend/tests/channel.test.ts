import { formatNumber, limitsFrom, livePath, streamPath, validate, validateQuery, withDefaults } from '../src/channel';
import { DEFAULT_LIMITS, DEFAULT_QUERY } from '../src/types';

describe('formatNumber', () => {
  it.each([
    [10, '10'],
    [-5, '-5'],
    [0.5, '0.5'],
    [-0, '0'],
    [123456.000001, '123456.000001'],
  ])('writes %s as %s', (x, text) => expect(formatNumber(x)).toBe(text));

  it.each([Number.NaN, Infinity, 1e15, 1e21, 1e-10, 0.1234567891])('refuses %s, which the path grammar cannot hold', (x) =>
    expect(formatNumber(x)).toBeUndefined(),
  );
});

describe('streamPath', () => {
  it("is the tutorial's form for one uniform series", () => {
    expect(streamPath({ ...DEFAULT_QUERY, lowerLimit: 10, upperLimit: 20, tickInterval: 100 })).toBe('custom-10-20-100');
  });
  it('encodes negatives, decimals, generator and series', () => {
    expect(streamPath({ lowerLimit: -5, upperLimit: 5.5, tickInterval: 250, generator: 'sine', series: 3 })).toBe(
      'custom--5-5.5-250-sine-3',
    );
  });
});

describe('validate', () => {
  const base = withDefaults({ refId: 'A' });
  it('accepts the defaults', () => expect(validate(base, DEFAULT_LIMITS)).toEqual({}));
  it('wants lower below upper', () =>
    expect(validate({ ...base, lowerLimit: 5, upperLimit: 5 }, DEFAULT_LIMITS).upperLimit).toMatch(/above the lower/));
  it.each([0, -5, Number.NaN, 0.5, 4_000_000])('refuses tick %s', (tick) =>
    expect(validate({ ...base, tickInterval: tick }, DEFAULT_LIMITS).tickInterval).toMatch(/between 1 and 3600000/));
  it.each([0, 11, 1.5])('refuses %s series', (series) =>
    expect(validate({ ...base, series }, DEFAULT_LIMITS).series).toBeDefined());
  it('keeps the longest valid query under the 120-character path limit', () => {
    const longest = { lowerLimit: -123456789012345.12, upperLimit: 123456789012345.12, tickInterval: 3599999.123456789, generator: 'a'.repeat(32), series: 10 };
    expect(validate(longest, DEFAULT_LIMITS)).toEqual({});
    expect(streamPath(longest).length).toBeLessThanOrEqual(120);
  });
});

describe('limitsFrom', () => {
  it('lets datasource settings tighten, never loosen, the limits', () => {
    expect(limitsFrom({ minTickMs: 50, maxSeries: 20 }, DEFAULT_LIMITS)).toEqual({ ...DEFAULT_LIMITS, minTickMs: 50 });
    expect(limitsFrom({ minTickMs: -1, maxSeries: 2 }, DEFAULT_LIMITS)).toEqual({ ...DEFAULT_LIMITS, maxSeries: 2 });
  });
});

describe('livePath', () => {
  const fields = { ...DEFAULT_QUERY, lowerLimit: 10, upperLimit: 20, tickInterval: 100 };
  it('is the channel path alone without display options', () => expect(livePath(fields, { alias: '', unit: '', labels: [], logs: false })).toBe('custom-10-20-100'));
  it('carries alias and unit as base64url JSON after the channel, as services/plugin/display.py reads them', () => {
    const path = livePath(fields, { alias: 'Température {{series}}', unit: 'celsius', labels: [], logs: false });
    const [channel, encoded] = path.split('/display=');
    expect(channel).toBe('custom-10-20-100');
    expect(encoded).toMatch(/^[A-Za-z0-9_-]+$/);
    const bytes = Uint8Array.from(atob(encoded.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    expect(JSON.parse(new TextDecoder().decode(bytes))).toEqual({ alias: 'Température {{series}}', unit: 'celsius' });
  });
});

describe('validateQuery', () => {
  it("keeps the channel id within Grafana's 160 characters", () => {
    const query = { refId: 'A', lowerLimit: -123456789012345.12, upperLimit: 123456789012345.12, alias: 'a'.repeat(60) };
    expect(validateQuery(query, DEFAULT_LIMITS, 'uid').alias).toMatch(/over Grafana's 160: shorten them/);
  });
  it('reads numbers typed as text, and an empty field as its default', () => {
    expect(withDefaults({ refId: 'A', lowerLimit: ' 5 ', upperLimit: '' })).toMatchObject({ lowerLimit: 5, upperLimit: 100 });
    expect(validateQuery({ refId: 'A', series: '$n' }, DEFAULT_LIMITS, 'uid').series).toBeDefined();
  });
});
