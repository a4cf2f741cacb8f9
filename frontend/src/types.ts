import { DataSourceJsonData } from '@grafana/data';
import { DataQuery } from '@grafana/schema';

/** How a query fills its panel: a time series, or only the latest value (stat, gauge). */
export enum StreamMode {
  Append = 'append',
  Latest = 'latest',
}

/**
 * Which family of channel a query streams (services/common/channels.py): a pure generator
 * (`custom-…`, absent = generator), a stateful source a worker runs (`source-<source>-<tick>`),
 * or a channel external programs publish into (`pub-<channel>`).
 */
export type QueryKind = 'generator' | 'source' | 'published';

/**
 * A panel query: the tutorial's three numbers, plus what the backend offers beyond them.
 * Number fields hold a number, or text with template variables (`$lower`, `${tick}`)
 * until applyTemplateVariables resolves them.
 */
export interface StreamQuery extends DataQuery {
  kind?: QueryKind;
  /** A source's name (kind `source`); it polls every `tickInterval` ms. */
  source?: string;
  /** A published channel's name (kind `published`), without `pub-`. */
  channel?: string;
  lowerLimit?: number | string;
  upperLimit?: number | string;
  tickInterval?: number | string;
  generator?: string;
  series?: number | string;
  /** Legend name; `{{series}}` becomes the series number (services/plugin/display.py). */
  alias?: string;
  /** A Grafana unit id (`celsius`, `percent`, `ms`). */
  unit?: string;
  /** An event channel's string fields shown as labels of its other fields (legend, "Labels to fields"). */
  labels?: string[];
  /** An event channel's rows asked for Grafana's Logs panel (frame meta `preferredVisualisationType`). */
  logs?: boolean;
  mode?: StreamMode;
  /** Most rows the panel keeps; empty: the panel's time range. */
  bufferRows?: number | string;
}

/** A query's channel, variables resolved. */
export interface QueryFields {
  lowerLimit: number;
  upperLimit: number;
  tickInterval: number;
  generator: string;
  series: number;
}

/** What changes the frames but not the channel's values. */
export interface DisplayFields {
  alias: string;
  unit: string;
  labels: string[];
  logs: boolean;
}

export const DEFAULT_QUERY: QueryFields = {
  lowerLimit: 0,
  upperLimit: 100,
  tickInterval: 1000,
  generator: 'uniform',
  series: 1,
};

/** Datasource settings the backend reads (services/plugin/datasource.py). */
export interface StreamOptions extends DataSourceJsonData {
  brokerAddress?: string;
  minTickMs?: number;
  maxSeries?: number;
  maxChannels?: number;
  maxValuesPerSecond?: number;
  /** Editors and Admins may publish rows into `pub-*` channels through Grafana Live. */
  allowPublish?: boolean;
}

/** Secret settings: Grafana stores them encrypted and hands them to the backend decrypted only. */
export interface StreamSecureOptions {
  /** The plugin's CURVE secret key (Z85, or the whole .key_secret file `zmqstream keys` wrote). */
  curveSecretKey?: string;
  /** The broker's CURVE public key (Z85, or the whole broker.key file). */
  brokerPublicKey?: string;
}

/** What a channel may ask for; the backend's `limits` resource answers this shape. */
export interface Limits {
  minTickMs: number;
  maxTickMs: number;
  maxSeries: number;
}

export const DEFAULT_LIMITS: Limits = { minTickMs: 1, maxTickMs: 3_600_000, maxSeries: 10 };

export interface GeneratorInfo {
  name: string;
  description: string;
}

/** A field of an event channel, as the recorder last recorded it. */
export interface FieldInfo {
  name: string;
  type: 'number' | 'string' | 'boolean';
}

/** A source or a published channel the backend knows; `fields` is empty until the recorder has its rows. */
export interface ChannelInfo {
  name: string;
  fields: FieldInfo[];
}

/**
 * What the editor and dashboard variables may pick: the backend's `streams` resource.
 * `problems` says what it could not ask (no broker, no recorder): the lists are then partial.
 */
export interface StreamCatalog {
  generators: GeneratorInfo[];
  sources: ChannelInfo[];
  published: ChannelInfo[];
  problems: string[];
}

/** The backend's built-ins, offered when its `generators` resource cannot be reached. */
export const BUILTIN_GENERATORS: GeneratorInfo[] = [
  { name: 'uniform', description: 'a random value in [lower, upper] every tick' },
  { name: 'random_walk', description: 'a bounded random walk between lower and upper' },
  { name: 'sine', description: 'a sine between lower and upper, series out of phase' },
];

/** What the editor offers when the backend cannot be asked. */
export const FALLBACK_CATALOG: StreamCatalog = {
  generators: BUILTIN_GENERATORS,
  sources: [{ name: 'host', fields: [] }],
  published: [],
  problems: [],
};
