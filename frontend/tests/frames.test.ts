// Frames our real plugin sent (tests/golden/stream_packets.jsonl, captured by
// tests/capture_stream.py) read by Grafana's own StreamingDataFrame and dataFrameFromJSON.
import { DataFrameJSON, dataFrameFromJSON, FieldType, StreamingDataFrame } from '@grafana/data';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const CAPTURE = join(__dirname, '..', '..', 'tests', 'golden', 'stream_packets.jsonl');
const packets: DataFrameJSON[] = readFileSync(CAPTURE, 'utf8')
  .trim()
  .split('\n')
  .map((line) => JSON.parse(line));

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
