import { DataQueryRequest, dateTime, LiveChannelScope, StreamingFrameAction } from '@grafana/data';
import { firstValueFrom, of, toArray } from 'rxjs';

import { MAX_BUFFER_ROWS } from '../src/datasource';
import { StreamQuery } from '../src/types';
import { datasource } from './fakes';

const getDataStream = vi.fn();
vi.mock('@grafana/runtime', async (importOriginal) => ({
  ...(await importOriginal<typeof import('@grafana/runtime')>()),
  getGrafanaLiveSrv: () => ({ getDataStream }),
}));

function request(targets: StreamQuery[], minutes = 1): DataQueryRequest<StreamQuery> {
  const to = dateTime();
  const from = dateTime(to.valueOf() - minutes * 60_000);
  return {
    requestId: 'Q1',
    targets,
    range: { from, to, raw: { from: `now-${minutes}m`, to: 'now' } },
    maxDataPoints: 500,
  } as unknown as DataQueryRequest<StreamQuery>;
}

beforeEach(() => {
  getDataStream.mockReset();
  getDataStream.mockImplementation((options) => of({ data: [options.addr.path] }));
});

describe('DataSource.query', () => {
  it('opens one Live stream per query on the datasource scope and merges them', async () => {
    const ds = datasource();
    const responses = await firstValueFrom(
      ds
        .query(
          request([
            { refId: 'A', lowerLimit: 10, upperLimit: 20, tickInterval: 100 },
            { refId: 'B', lowerLimit: -1, upperLimit: 1, tickInterval: 50, generator: 'sine', series: 2 },
          ]),
        )
        .pipe(toArray()),
    );
    expect(responses.map((r) => r.data[0])).toEqual(['custom-10-20-100', 'custom--1-1-50-sine-2']);
    const [first] = getDataStream.mock.calls[0];
    expect(first.addr).toMatchObject({ scope: LiveChannelScope.DataSource, stream: 'zs-uid', namespace: 'zs-uid' });
    expect(first.buffer).toEqual({ maxDelta: 60_000, maxLength: 601, action: StreamingFrameAction.Append });
  });

  it('keeps a long range within the buffer cap', () => {
    const ds = datasource();
    ds.query(request([{ refId: 'A', tickInterval: 1 }], 60)).subscribe();
    expect(getDataStream.mock.calls[0][0].buffer.maxLength).toBe(MAX_BUFFER_ROWS);
  });

  it('opens no stream for a hidden or invalid query', async () => {
    const ds = datasource({ maxSeries: 2 });
    const responses = await firstValueFrom(
      ds
        .query(
          request([
            { refId: 'A', lowerLimit: 5, upperLimit: 1 },
            { refId: 'B', tickInterval: 0 },
            { refId: 'C', series: 3 },
            { refId: 'D', hide: true },
          ]),
        )
        .pipe(toArray()),
    );
    expect(getDataStream).not.toHaveBeenCalled();
    expect(responses).toEqual([{ data: [] }]);
  });
});
