/**
 * The backend's `streams` resource read defensively (an older plugin, a proxy's error
 * page): whatever is not the expected shape is left out, and an empty list of generators
 * or sources falls back to the built-ins so the editor always offers something.
 */
import { ChannelInfo, FALLBACK_CATALOG, FieldInfo, GeneratorInfo, StreamCatalog } from './types';

/** What a dashboard's query variable may ask for (DataSource.metricFindQuery). */
export const VARIABLE_QUERIES = ['published', 'sources', 'generators'];

const FIELD_TYPES = new Set(['number', 'string', 'boolean']);

export function catalogFrom(answer: unknown): StreamCatalog {
  const body = (answer ?? {}) as Record<string, unknown>;
  const generators = list(body.generators).flatMap((g): GeneratorInfo[] =>
    typeof g.name === 'string' ? [{ name: g.name, description: typeof g.description === 'string' ? g.description : '' }] : []
  );
  const problems = Array.isArray(body.problems) ? body.problems.filter((p): p is string => typeof p === 'string') : [];
  return {
    generators: generators.length > 0 ? generators : FALLBACK_CATALOG.generators,
    sources: orElse(channels(body.sources), FALLBACK_CATALOG.sources),
    published: channels(body.published),
    problems,
  };
}

/** The names a query variable lists, in the catalog's order. */
export function variableValues(catalog: StreamCatalog, query: string): string[] {
  switch (query) {
    case 'generators':
      return catalog.generators.map((g) => g.name);
    case 'sources':
      return catalog.sources.map((s) => s.name);
    default:
      return catalog.published.map((p) => p.name);
  }
}

/** A channel's fields in one line, for a picker's description. */
export function describeFields(channel: ChannelInfo | undefined): string {
  if (!channel || channel.fields.length === 0) {
    return 'fields not recorded yet';
  }
  return channel.fields.map((f) => `${f.name} (${f.type})`).join(', ');
}

function channels(value: unknown): ChannelInfo[] {
  return list(value).flatMap((c): ChannelInfo[] => {
    if (typeof c.name !== 'string') {
      return [];
    }
    const fields = list(c.fields).flatMap((f): FieldInfo[] =>
      typeof f.name === 'string' && FIELD_TYPES.has(String(f.type)) ? [{ name: f.name, type: f.type as FieldInfo['type'] }] : []
    );
    return [{ name: c.name, fields }];
  });
}

function list(value: unknown): Array<Record<string, unknown>> {
  return Array.isArray(value) ? value.filter((v): v is Record<string, unknown> => typeof v === 'object' && v !== null) : [];
}

function orElse<T>(items: T[], fallback: T[]): T[] {
  return items.length > 0 ? items : fallback;
}
