// Frames our real plugin sent (tests/golden/stream_packets.jsonl, captured by
// tests/capture_stream.py) read by Grafana's own StreamingDataFrame and dataFrameFromJSON.
import { DataFrameJSON, dataFrameFromJSON, FieldType, getFieldDisplayName, StreamingDataFrame } from '@grafana/data';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** One packet per line of a golden file our plugin wrote (tests/golden/<name>). */
function goldenPackets(name: string): DataFrameJSON[] {
  return readFileSync(join(__dirname, '..', '..', 'tests', 'golden', name), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line));
}

const packets = goldenPackets('stream_packets.jsonl');

/** Times and values straight from the JSON, as the plugin meant them. */
function expected(): { times: number[]; values: number[] } {
  const times: number[] = [];
  const values: number[] = [];
  for (const packet of packets) {
    const [t, v] = packet.data!.values as number[][];
    times.push(...t);
    values.push(...v);
  }
  return { times, values };
}

describe('frames from our plugin in Grafana', () => {
  it('stream into a StreamingDataFrame: initial data, then schema+data, then data only', () => {
    const { times, values } = expected();
    const [initial, ...live] = structuredClone(packets); // the frame takes over (and grows) the arrays it is given
    const frame = StreamingDataFrame.fromDataFrameJSON(initial, { maxLength: 10_000 });
    for (const packet of live) {
      frame.push(packet);
    }
    expect(frame.fields.map((f) => [f.name, f.type])).toEqual([
      ['time', FieldType.time],
      ['value', FieldType.number],
    ]);
    expect(frame.length).toBe(times.length);
    expect(frame.fields[0].values).toEqual(times);
    expect(frame.fields[1].values).toEqual(values);
    expect(values.every((v) => v >= 10 && v <= 20)).toBe(true);
  });

  it('decode one by one with dataFrameFromJSON', () => {
    const frame = dataFrameFromJSON(packets[1]);
    expect(frame.fields[0].type).toBe(FieldType.time);
    expect(frame.fields[1].values).toEqual((packets[1].data!.values as number[][])[1]);
  });
});

describe('legends of our frames in Grafana', () => {
  const GOLDEN = join(__dirname, '..', '..', 'tests', 'golden');
  const multi: DataFrameJSON = JSON.parse(readFileSync(join(GOLDEN, 'frame_multi_series.json'), 'utf8'));

  it('read value 0, value 1, … for several series (tests/golden/frame_multi_series.json, our plugin’s bytes)', () => {
    const frame = dataFrameFromJSON(multi);
    expect(frame.fields.slice(1).map((f) => getFieldDisplayName(f, frame, [frame]))).toEqual(['value 0', 'value 1', 'value 2']);
    expect(frame.fields[1].config).toEqual({ min: 0, max: 1 });
  });

  it('read the alias the backend put in displayNameFromDS', () => {
    const aliased = structuredClone(multi);
    aliased.schema!.fields.slice(1).forEach((f, i) => (f.config = { ...f.config, displayNameFromDS: `room ${i}` }));
    const frame = dataFrameFromJSON(aliased);
    expect(frame.fields.slice(1).map((f) => getFieldDisplayName(f, frame, [frame]))).toEqual(['room 0', 'room 1', 'room 2']);
  });
});

describe('event frames from our plugin in Grafana (tests/golden/event_stream_packets.jsonl)', () => {
  const events = goldenPackets('event_stream_packets.jsonl');

  it('decode typed fields with dataFrameFromJSON: number, string and boolean, nulls kept', () => {
    const frame = dataFrameFromJSON(structuredClone(events[0]));
    expect(frame.fields.map((f) => [f.name, f.type])).toEqual([
      ['time', FieldType.time],
      ['temp', FieldType.number],
      ['count', FieldType.number],
      ['door', FieldType.string],
      ['ok', FieldType.boolean],
    ]);
    expect(frame.fields[1].values[0]).toBe(21.5);
    expect(frame.fields[1].values[1]).toBeNull();
    expect(Number.isNaN(frame.fields[1].values[2])).toBe(true); // entities: NaN comes back
    expect(frame.fields[2].values).toEqual([1, 2, null]);
    expect(frame.fields[3].values).toEqual(['open', null, 'shut']);
    expect(frame.fields[4].values).toEqual([true, null, false]);
  });

  it('stream into a StreamingDataFrame, and a new schema replaces the fields instead of mixing', () => {
    const [first, second, changed] = structuredClone(events);
    const frame = StreamingDataFrame.fromDataFrameJSON(first, { maxLength: 100 });
    frame.push(second);
    expect(frame.length).toBe(4);
    expect(frame.fields[3].values).toEqual(['open', null, 'shut', 'open']);
    expect(frame.fields[4].values).toEqual([true, null, false, false]);
    frame.push(changed);
    expect(frame.fields.map((f) => [f.name, f.type])).toEqual([
      ['time', FieldType.time],
      ['level', FieldType.string],
    ]);
    expect(frame.fields[1].values.slice(-1)).toEqual(['low']);
  });
});

describe('logs frames with label fields from our plugin in Grafana (tests/golden/event_logs_packets.jsonl)', () => {
  const logs = goldenPackets('event_logs_packets.jsonl');

  it('ask for the Logs panel and carry the label field as labels, not as a field', () => {
    const frame = dataFrameFromJSON(structuredClone(logs[0]));
    expect(frame.meta?.preferredVisualisationType).toBe('logs');
    expect(frame.fields.map((f) => [f.name, f.type])).toEqual([
      ['time', FieldType.time],
      ['message', FieldType.string],
      ['level', FieldType.string],
    ]);
    expect(frame.fields[1].labels).toEqual({ service: 'api' });
    expect(getFieldDisplayName(frame.fields[1], frame, [frame])).toBe('message api');
  });

  it('stream into a StreamingDataFrame: new labels come as a new schema, and the logs meta stays', () => {
    const [api, db] = structuredClone(logs);
    const frame = StreamingDataFrame.fromDataFrameJSON(api, { maxLength: 100 });
    frame.push(db);
    expect(frame.meta?.preferredVisualisationType).toBe('logs');
    expect(frame.fields[1].labels).toEqual({ service: 'db' });
    expect(frame.fields[1].values.slice(-1)).toEqual(['connection reset']);
  });
});
