// DataSource.query() with Grafana's real DataSourceWithBackend, StreamingDataFrame and
// response parsing; Grafana's backend, Live service and template service are faked at
// their boundary. The backend's answers are what our real plugin sent
// (tests/golden/panel_packets.json, captured by tests/capture_panel.py).
import { DataFrame, DataFrameJSON, DataQueryRequest, DataQueryResponse, dateTime, LiveChannelScope, StreamingFrameAction } from '@grafana/data';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { firstValueFrom, Observable, toArray } from 'rxjs';

import { queryLivePath } from '../src/channel';
import { LIVE_MARGIN_MS } from '../src/datasource';
import { StreamMode, StreamQuery } from '../src/types';
import { datasource, FakeLive, useBackend, useVariables } from './fakes';

interface Capture {
  now: number;
  path: string;
  query: { results: { A: { frames: DataFrameJSON[] } } };
  after: number;
  subscribe: DataFrameJSON;
  packets: DataFrameJSON[];
}
const CAPTURE: Capture = JSON.parse(readFileSync(join(__dirname, '..', '..', 'tests', 'golden', 'panel_packets.json'), 'utf8'));
const PANEL: StreamQuery = { refId: 'A', lowerLimit: 0, upperLimit: 10, tickInterval: 1000 };

function request(targets: StreamQuery[], fromMs: number, toMs: number, scopedVars = {}): DataQueryRequest<StreamQuery> {
  const from = dateTime(fromMs);
  const to = dateTime(toMs);
  return {
    requestId: 'Q1',
    targets,
    range: { from, to, raw: { from, to } },
    scopedVars,
    maxDataPoints: 1000,
    intervalMs: 1000,
  } as unknown as DataQueryRequest<StreamQuery>;
}

/** Lets the query's request go out: Grafana 13 builds it asynchronously, 12 at once. */
function requestsSent(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The panel's frame after each response so far. */
function watch(responses: Observable<DataQueryResponse>): { frames: DataFrame[]; unsubscribe: () => void } {
  const frames: DataFrame[] = [];
  const subscription = responses.subscribe((response) => frames.push(...(response.data as DataFrame[])));
  return { frames, unsubscribe: () => subscription.unsubscribe() };
}

function times(frame: DataFrame): number[] {
  return frame.fields[0].values.slice(0, frame.length) as number[];
}

function last<T>(items: T[]): T {
  return items[items.length - 1];
}

function steps(values: number[]): Set<number> {
  return new Set(values.slice(1).map((t, i) => t - values[i]));
}

let live: FakeLive;
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(CAPTURE.now);
  live = new FakeLive().install();
  useVariables({ lower: '0', upper: '10', tick: '1000', bad: 'abc', room: 'kitchen' });
});
afterEach(() => vi.useRealTimers());

describe('a panel over the last 15 minutes', () => {
  it('is full at once from QueryData, then streams on from its last row with no gap and no duplicate', async () => {
    const requests = useBackend(CAPTURE.query);
    const panel = watch(datasource().query(request([PANEL], CAPTURE.now - 15 * 60_000, CAPTURE.now)));
    await requestsSent();

    expect(Number(requests[0].data.to)).toBe(CAPTURE.now - LIVE_MARGIN_MS); // the subscription brings the rest
    expect(live.opened).toHaveLength(1);
    const [options] = live.opened;
    expect(options.addr).toMatchObject({ scope: LiveChannelScope.DataSource, stream: 'zs-uid', namespace: 'zs-uid', path: CAPTURE.path });
    expect(options.addr.data).toEqual({ after: CAPTURE.after });
    expect(options.buffer).toEqual({ maxDelta: 15 * 60_000, maxLength: 1000, action: StreamingFrameAction.Append });

    live.publish(CAPTURE.path, CAPTURE.subscribe); // SubscribeStream's answer to {"after": …}
    expect(last(panel.frames).length).toBe(900);
    for (const packet of CAPTURE.packets) {
      live.publish(CAPTURE.path, packet);
    }
    const frame = last(panel.frames);
    const newest = (last(CAPTURE.packets).data!.values as number[][])[0][0];
    expect(last(times(frame))).toBe(newest); // every live row came in after the history…
    expect(steps(times(frame))).toEqual(new Set([1000])); // …none twice, none missing…
    expect(newest - times(frame)[0]).toBe(15 * 60_000); // …and the panel keeps its 15 minutes
    expect(frame.fields.map((f) => [f.name, f.config])).toEqual([
      ['time', {}],
      ['value', { min: 0, max: 10 }],
    ]);
  });

  it('in Latest value mode keeps only the newest row, as a stat or gauge panel wants', async () => {
    useBackend(CAPTURE.query);
    const panel = watch(datasource().query(request([{ ...PANEL, mode: StreamMode.Latest }], CAPTURE.now - 15 * 60_000, CAPTURE.now)));
    await requestsSent();
    expect(live.opened[0].buffer).toEqual({ maxLength: 1, action: StreamingFrameAction.Replace });
    live.publish(CAPTURE.path, CAPTURE.subscribe);
    for (const packet of CAPTURE.packets) {
      live.publish(CAPTURE.path, packet);
      expect(last(panel.frames).length).toBe(1);
    }
    const newest = last(CAPTURE.packets).data!.values as number[][];
    expect(last(panel.frames).fields.map((f) => f.values[0])).toEqual([newest[0][0], newest[1][0]]);
  });

  it('keeps the rows the query asks for', async () => {
    useBackend(CAPTURE.query);
    watch(datasource().query(request([{ ...PANEL, bufferRows: 50 }], CAPTURE.now - 60_000, CAPTURE.now)));
    await requestsSent();
    expect(live.opened[0].buffer).toEqual({ maxLength: 50, action: StreamingFrameAction.Append });
  });
});

describe('a live range shorter than the margin', () => {
  it('asks QueryData for a range that ends where it starts, not before', async () => {
    const requests = useBackend(CAPTURE.query);
    watch(datasource().query(request([PANEL], CAPTURE.now - 500, CAPTURE.now)));
    await requestsSent();
    expect(Number(requests[0].data.to)).toBe(CAPTURE.now - 500);
    expect(Number(requests[0].data.from)).toBe(CAPTURE.now - 500);
  });
});

describe('a range that does not reach now', () => {
  it('is answered by QueryData alone and opens no stream', async () => {
    const requests = useBackend(CAPTURE.query);
    const yesterday = CAPTURE.now - 24 * 3_600_000;
    const responses = await firstValueFrom(datasource().query(request([PANEL], yesterday, yesterday + 3_600_000)).pipe(toArray()));
    expect(Number(requests[0].data.to)).toBe(yesterday + 3_600_000);
    expect(live.opened).toHaveLength(0);
    expect((responses[0].data[0] as DataFrame).length).toBe(899);
  });
});

describe('template variables', () => {
  it('are resolved in every field before QueryData and in the stream path', async () => {
    const requests = useBackend(CAPTURE.query);
    const query = { refId: 'A', lowerLimit: '$lower', upperLimit: '${upper}', tickInterval: '$tick', alias: '$room {{series}}', unit: 'celsius' };
    watch(datasource().query(request([query], CAPTURE.now - 60_000, CAPTURE.now)));
    await requestsSent();
    expect(requests[0].data.queries[0]).toMatchObject({ lowerLimit: 0, upperLimit: 10, tickInterval: 1000, alias: 'kitchen {{series}}' });
    const [path, display] = live.opened[0].addr.path.split('/display=');
    expect(path).toBe('custom-0-10-1000');
    expect(JSON.parse(atob(display.replace(/-/g, '+').replace(/_/g, '/')))).toEqual({ alias: 'kitchen {{series}}', unit: 'celsius' });
  });

  it('take a repeated panel’s scoped value first', async () => {
    const requests = useBackend(CAPTURE.query);
    watch(datasource().query(request([{ ...PANEL, upperLimit: '$upper' }], CAPTURE.now - 60_000, CAPTURE.now, { upper: { text: '20', value: '20' } })));
    await requestsSent();
    expect(requests[0].data.queries[0].upperLimit).toBe(20);
  });

  it('are resolved for Explore and alert rules (interpolateVariablesInQueries)', async () => {
    const [query] = datasource().interpolateVariablesInQueries([{ refId: 'A', lowerLimit: '$lower', series: '${lower}', generator: 'sine', unit: '$room' }], {});
    expect(query).toMatchObject({ lowerLimit: 0, series: 0, generator: 'sine', unit: 'kitchen' });
  });

  it('with a bad value give the same message as a bad number typed in, and run nothing', async () => {
    const requests = useBackend(CAPTURE.query);
    const responses = await firstValueFrom(
      datasource().query(request([{ ...PANEL, lowerLimit: '$bad' }, { ...PANEL, refId: 'B', lowerLimit: 'abc' }], CAPTURE.now - 60_000, CAPTURE.now)).pipe(toArray())
    );
    expect(requests).toHaveLength(0);
    expect(responses[0].errors?.map((e) => e.message)).toEqual([
      'A: Lower limit must be a plain number (up to 9 decimals, below 10^15)',
      'B: Lower limit must be a plain number (up to 9 decimals, below 10^15)',
    ]);
  });
});

describe('Explore', () => {
  it('streams a query and closes the stream when Explore drops it', async () => {
    useBackend(CAPTURE.query);
    const explore = watch(datasource().query({ ...request([PANEL], CAPTURE.now - 5 * 60_000, CAPTURE.now), app: 'explore' }));
    await requestsSent();
    live.publish(CAPTURE.path, CAPTURE.subscribe);
    live.publish(CAPTURE.path, CAPTURE.packets[0]);
    expect(last(explore.frames).length).toBeGreaterThan(0);
    explore.unsubscribe();
    expect(live.closed).toEqual([CAPTURE.path]);
  });
});

describe('queries that cannot run', () => {
  it('open no stream: hidden, invalid, or over the datasource limits', async () => {
    const requests = useBackend(CAPTURE.query);
    const ds = datasource({ maxSeries: 2 });
    const responses = await firstValueFrom(
      ds
        .query(
          request(
            [
              { refId: 'A', lowerLimit: 5, upperLimit: 1 },
              { refId: 'B', tickInterval: 0 },
              { refId: 'C', series: 3 },
              { refId: 'D', hide: true },
            ],
            CAPTURE.now - 60_000,
            CAPTURE.now
          )
        )
        .pipe(toArray())
    );
    expect(requests).toHaveLength(0);
    expect(live.opened).toHaveLength(0);
    expect(responses[0].errors?.map((e) => e.refId)).toEqual(['A', 'B', 'C']);
  });
});

describe('event channels (kind source and published)', () => {
  it('stream source-<source>-<tick> and pub-<channel>, history from QueryData first', async () => {
    const requests = useBackend(CAPTURE.query);
    const source: StreamQuery = { refId: 'A', kind: 'source', source: '$room', tickInterval: '$tick' };
    const published: StreamQuery = { refId: 'A', kind: 'published', channel: 'lab.door', unit: 'celsius' };
    useVariables({ room: 'host', tick: '1000' });
    watch(datasource().query(request([source], CAPTURE.now - 60_000, CAPTURE.now)));
    await requestsSent();
    expect(requests[0].data.queries[0]).toMatchObject({ kind: 'source', source: 'host', tickInterval: 1000 });
    expect(live.opened[0].addr.path).toBe('source-host-1000');
    watch(datasource().query(request([published], CAPTURE.now - 60_000, CAPTURE.now)));
    await requestsSent();
    expect(requests[1].data.queries[0]).toMatchObject({ kind: 'published', channel: 'lab.door' });
    expect(live.opened[1].addr.path.split('/display=')[0]).toBe('pub-lab.door');
  });

  it('run nothing with a bad source or channel name, and say why', async () => {
    const bad: StreamQuery[] = [
      { refId: 'A', kind: 'source', source: 'Host!' },
      { refId: 'B', kind: 'published', channel: '' },
    ];
    const response = await firstValueFrom(datasource().query(request(bad, CAPTURE.now - 60_000, CAPTURE.now)));
    expect(response.errors?.map((e) => e.message)).toEqual([
      expect.stringMatching(/^A: Source names are/),
      expect.stringMatching(/^B: Channel names are/),
    ]);
    expect(live.opened).toHaveLength(0);
  });
});

describe('dashboard variables listing streams (metricFindQuery)', () => {
  const STREAMS = {
    generators: [{ name: 'uniform', description: '' }, { name: 'sine', description: '' }],
    sources: [{ name: 'host', fields: [{ name: 'cpu', type: 'number' }] }],
    published: [{ name: 'lab.door', fields: [] }, { name: 'room', fields: [{ name: 'temp', type: 'number' }, { name: 'bogus', type: 'date' }] }],
    problems: [],
  };

  function backed(answer: unknown) {
    const ds = datasource();
    vi.spyOn(ds, 'getResource').mockImplementation(async (path: string) => (path === 'streams' ? answer : undefined));
    return { ds };
  }

  it('lists published channels (the default), sources or generators', async () => {
    const { ds } = backed(STREAMS);
    expect(await ds.metricFindQuery('published')).toEqual([
      { text: 'lab.door', value: 'lab.door' },
      { text: 'room', value: 'room' },
    ]);
    expect((await ds.metricFindQuery('')).map((v) => v.text)).toEqual(['lab.door', 'room']);
    expect((await ds.metricFindQuery('sources')).map((v) => v.text)).toEqual(['host']);
  });

  it('resolves a variable in the variable query, and refuses an unknown one saying what it takes', async () => {
    const { ds } = backed(STREAMS);
    useVariables({ what: 'generators' });
    expect((await ds.metricFindQuery('$what')).map((v) => v.text)).toEqual(['uniform', 'sine']);
    await expect(ds.metricFindQuery('channels')).rejects.toThrow(/use one of published, sources, generators/);
  });

  it('keeps what the catalog says and leaves out what it cannot read', async () => {
    const { ds } = backed(STREAMS);
    const found = await ds.catalog();
    expect(found.published[1].fields).toEqual([{ name: 'temp', type: 'number' }]);
    expect(found.sources[0].fields).toEqual([{ name: 'cpu', type: 'number' }]);
  });

  it('says why when the backend cannot list the published channels', async () => {
    const ds = datasource();
    vi.spyOn(ds, 'getResource').mockRejectedValue({ data: { error: 'broker unavailable: no answer' } });
    await expect(ds.metricFindQuery('published')).rejects.toThrow(/broker unavailable: no answer/);
    expect((await ds.metricFindQuery('sources')).map((v) => v.text)).toEqual(['host']); // the built-in
  });
});

describe('label fields and logs in the Live path', () => {
  it('carries them after the channel, resolving a multi-value variable into one label field each', () => {
    useVariables({ lbl: 'room,site' });
    const ds = datasource();
    const query = ds.applyTemplateVariables({ refId: 'A', kind: 'published', channel: 'lab', labels: ['$lbl'], logs: true }, {});
    expect(query.labels).toEqual(['room', 'site']);
    const path = queryLivePath(query);
    const [channel, encoded] = path.split('/display=');
    expect(channel).toBe('pub-lab');
    expect(JSON.parse(atob(encoded.replace(/-/g, '+').replace(/_/g, '/')))).toEqual({ labels: ['room', 'site'], logs: true });
    expect(queryLivePath({ refId: 'A', labels: ['room'], logs: true })).toBe('custom-0-100-1000'); // a generator has neither
    const generator = ds.applyTemplateVariables({ refId: 'A', labels: ['$nope'], logs: true }, {});
    expect([generator.labels, generator.logs]).toEqual([undefined, undefined]); // nor sends them to QueryData
  });
});
