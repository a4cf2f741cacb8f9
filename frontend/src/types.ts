import { DataSourceJsonData } from '@grafana/data';
import { DataQuery } from '@grafana/schema';

/** A panel query: the tutorial's three numbers, plus what the backend offers beyond them. */
export interface StreamQuery extends DataQuery {
  lowerLimit?: number;
  upperLimit?: number;
  tickInterval?: number;
  generator?: string;
  series?: number;
}

export type QueryFields = Required<Pick<StreamQuery, 'lowerLimit' | 'upperLimit' | 'tickInterval' | 'generator' | 'series'>>;

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

/** The backend's built-ins, offered when its `generators` resource cannot be reached. */
export const BUILTIN_GENERATORS: GeneratorInfo[] = [
  { name: 'uniform', description: 'a random value in [lower, upper] every tick' },
  { name: 'random_walk', description: 'a bounded random walk between lower and upper' },
  { name: 'sine', description: 'a sine between lower and upper, series out of phase' },
];
