import { cleanup, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import React from 'react';

import { QueryEditor } from '../src/components/QueryEditor';
import { DataSource } from '../src/datasource';
import { StreamQuery } from '../src/types';
import { datasource, useVariables } from './fakes';

function setup(query: StreamQuery, ds: DataSource = datasource(), streams?: unknown) {
  const resource = vi.spyOn(ds, 'getResource');
  if (streams === undefined) {
    resource.mockRejectedValue(new Error('no backend in this test'));
  } else {
    resource.mockImplementation(async (path: string) => (path === 'streams' ? streams : Promise.reject(new Error('no limits here'))));
  }
  const onChange = vi.fn();
  const onRunQuery = vi.fn();
  const view = render(<QueryEditor query={query} onChange={onChange} onRunQuery={onRunQuery} datasource={ds} />);
  return { onChange, onRunQuery, view };
}

const TUTORIAL: StreamQuery = { refId: 'A', lowerLimit: 10, upperLimit: 20, tickInterval: 100 };

beforeEach(() => useVariables({ lower: '-5', tick: '250', bad: 'abc' }));

describe('QueryEditor', () => {
  it('shows the three tutorial inputs, the generators and the stream path', async () => {
    setup(TUTORIAL);
    expect(screen.getByLabelText('Lower Limit')).toHaveProperty('value', '10');
    expect(screen.getByLabelText('Upper Limit')).toHaveProperty('value', '20');
    expect(screen.getByLabelText('Tick interval (ms)')).toHaveProperty('value', '100');
    expect(screen.getByText('random_walk')).toBeTruthy();
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('custom-10-20-100');
  });

  it('changes the query and the path as the user types, and runs it on blur', async () => {
    const user = userEvent.setup();
    const { onChange, onRunQuery } = setup(TUTORIAL);
    const lower = screen.getByLabelText('Lower Limit');
    await user.clear(lower);
    await user.type(lower, '-5');
    expect(onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, lowerLimit: -5 });
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('custom--5-20-100');
    await user.tab();
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('explains an invalid query and does not run it', async () => {
    const user = userEvent.setup();
    const { onRunQuery } = setup(TUTORIAL);
    const lower = screen.getByLabelText('Lower Limit');
    await user.clear(lower);
    await user.type(lower, '30');
    await user.tab();
    expect(screen.getByTestId('zmqstream-errors').textContent).toMatch(/Upper limit must be above the lower limit/);
    expect(screen.queryByTestId('zmqstream-path')).toBeNull();
    const tick = screen.getByLabelText('Tick interval (ms)');
    await user.clear(tick);
    await user.type(tick, '0');
    await user.tab();
    expect(screen.getByTestId('zmqstream-errors').textContent).toMatch(/Tick interval must be between 1 and/);
    expect(onRunQuery).not.toHaveBeenCalled();
  });

  it("applies the datasource's own limits", async () => {
    const user = userEvent.setup();
    const { onRunQuery } = setup(TUTORIAL, datasource({ minTickMs: 500 }));
    await user.click(screen.getByLabelText('Tick interval (ms)'));
    await user.tab();
    await waitFor(() => expect(screen.getByTestId('zmqstream-errors').textContent).toMatch(/between 500 and/));
    expect(onRunQuery).not.toHaveBeenCalled();
  });

  it('switches generator and runs the query', async () => {
    const user = userEvent.setup();
    const { onChange, onRunQuery } = setup(TUTORIAL);
    await user.click(screen.getByText('sine'));
    expect(onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, generator: 'sine' });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('takes template variables, checks them with their values and shows the path they resolve to', async () => {
    const user = userEvent.setup();
    const { onChange, onRunQuery, view } = setup(TUTORIAL);
    const lower = screen.getByLabelText('Lower Limit');
    await user.clear(lower);
    await user.type(lower, '$lower');
    expect(onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, lowerLimit: '$lower' });
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('custom--5-20-100');
    await user.tab();
    expect(onRunQuery).toHaveBeenCalledTimes(1);
    view.unmount();
    setup({ ...TUTORIAL, tickInterval: '${tick}' });
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('custom-10-20-250');
  });

  it('shows a variable with a bad value as it shows a bad number typed in', () => {
    setup({ ...TUTORIAL, lowerLimit: '$bad' });
    const fromVariable = screen.getByTestId('zmqstream-errors').textContent;
    cleanup();
    setup({ ...TUTORIAL, lowerLimit: 'abc' });
    expect(screen.getByTestId('zmqstream-errors').textContent).toBe(fromVariable);
    expect(fromVariable).toMatch(/Lower limit must be a plain number/);
  });

  it('sets alias, unit (picked or typed) and mode, and shows them with the path', async () => {
    const user = userEvent.setup();
    const { onChange, onRunQuery, view } = setup(TUTORIAL);
    const unit = document.getElementById('zmqstream-unit')!;
    await user.type(unit, 'Celsius');
    await user.click(await screen.findByText('Temperature / Celsius (°C)')); // Grafana's own unit list
    expect(onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, unit: 'celsius' });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
    view.unmount();
    const again = setup(TUTORIAL);
    await user.type(document.getElementById('zmqstream-unit')!, '$unit{Enter}'); // a custom unit: a dashboard variable
    expect(again.onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, unit: '$unit' });
    await user.click(screen.getByText('Latest value'));
    expect(again.onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, mode: 'latest' });
    expect(again.onRunQuery).toHaveBeenCalledTimes(2);
    again.view.rerender(<QueryEditor query={{ ...TUTORIAL, alias: 'room {{series}}', unit: 'celsius' }} onChange={onChange} onRunQuery={onRunQuery} datasource={datasource()} />);
    expect(screen.getByTestId('zmqstream-path').textContent).toBe('Stream path: custom-10-20-100 · legend “room {{series}}” · unit celsius');
  });

  it('refuses an alias longer than the backend takes, and a buffer that is not a row count', () => {
    setup({ ...TUTORIAL, alias: 'x'.repeat(65), bufferRows: '1.5' });
    const errors = screen.getByTestId('zmqstream-errors').textContent;
    expect(errors).toMatch(/Alias must be at most 64 characters/);
    expect(errors).toMatch(/Buffer must be empty/);
  });
});

/** What the backend's `streams` resource answers (services/plugin/catalog.py). */
const STREAMS = {
  generators: [{ name: 'uniform', description: 'a random value' }, { name: 'sawtooth', description: 'a custom one' }],
  sources: [
    { name: 'host', fields: [{ name: 'cpu', type: 'number' }] },
    { name: 'meter', fields: [] },
  ],
  published: [
    { name: 'lab.door', fields: [{ name: 'temp', type: 'number' }, { name: 'room', type: 'string' }, { name: 'ok', type: 'boolean' }] },
    { name: 'room', fields: [{ name: 'message', type: 'string' }] },
  ],
  problems: [],
};

async function choose(label: string, option: string) {
  const user = userEvent.setup();
  await user.click(document.getElementById(label)!);
  await user.click(await screen.findByText(option, { selector: '[role="option"] *, [role="option"]' }));
}

describe('QueryEditor kinds', () => {
  it('offers a source name and its tick for a source, a channel name for a published channel', async () => {
    const user = userEvent.setup();
    const { onChange, view } = setup({ refId: 'A', kind: 'source', source: 'meter', tickInterval: 500 });
    expect(screen.queryByLabelText('Lower Limit')).toBeNull();
    expect(screen.getByLabelText('Tick interval (ms)')).toHaveProperty('value', '500');
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('source-meter-500');
    await choose('zmqstream-source', 'host'); // no backend: the built-in source is still offered
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ source: 'host' }));
    await user.click(screen.getByText('Published'));
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ kind: 'published' }));
    view.rerender(
      <QueryEditor query={{ refId: 'A', kind: 'published', channel: 'lab.door' }} onChange={onChange} onRunQuery={vi.fn()} datasource={datasource()} />
    );
    expect(screen.getByText('lab.door')).toBeTruthy(); // a saved channel the backend did not list stays shown
    expect(screen.queryByLabelText('Tick interval (ms)')).toBeNull();
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('pub-lab.door');
    expect(screen.getByTestId('zmqstream-catalog-problems').textContent).toMatch(/no backend in this test/);
  });

  it("picks a published channel from the backend's list, shows its fields, and still takes a typed one", async () => {
    const user = userEvent.setup();
    const { onChange, onRunQuery } = setup({ refId: 'A', kind: 'published' }, datasource(), STREAMS);
    await choose('zmqstream-channel', 'lab.door');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', kind: 'published', channel: 'lab.door' });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
    await user.type(document.getElementById('zmqstream-channel')!, 'kitchen{Enter}');
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', kind: 'published', channel: 'kitchen' });
    expect(screen.queryByTestId('zmqstream-catalog-problems')).toBeNull();
  });

  it('lists installed sources with their fields and the custom generators', async () => {
    const source: StreamQuery = { refId: 'A', kind: 'source', source: 'host', tickInterval: 1000 };
    const { onChange, view } = setup(source, datasource(), STREAMS);
    await waitFor(() => expect(screen.getByTestId('zmqstream-fields').textContent).toBe('cpu (number)'));
    await choose('zmqstream-source', 'meter');
    expect(onChange).toHaveBeenLastCalledWith({ ...source, source: 'meter' });
    view.rerender(<QueryEditor query={{ ...source, source: 'meter' }} onChange={onChange} onRunQuery={vi.fn()} datasource={datasource()} />);
    expect(screen.getByTestId('zmqstream-fields').textContent).toBe('fields not recorded yet');
    view.unmount();
    setup(TUTORIAL, datasource(), STREAMS);
    expect(await screen.findByText('sawtooth')).toBeTruthy();
  });

  it("offers a published channel's text fields as label fields, and asks for logs", async () => {
    const user = userEvent.setup();
    const query: StreamQuery = { refId: 'A', kind: 'published', channel: 'lab.door' };
    const { onChange, view } = setup(query, datasource(), STREAMS);
    await waitFor(() => expect(screen.getByTestId('zmqstream-fields').textContent).toContain('room (string)'));
    await choose('zmqstream-labels', 'room');
    expect(onChange).toHaveBeenLastCalledWith({ ...query, labels: ['room'] });
    await user.click(screen.getByLabelText('Logs'));
    expect(onChange).toHaveBeenLastCalledWith({ ...query, logs: true });
    view.rerender(<QueryEditor query={{ ...query, labels: ['room'], logs: true }} onChange={onChange} onRunQuery={vi.fn()} datasource={datasource()} />);
    expect(screen.getByTestId('zmqstream-path').textContent).toMatch(/^Stream path: pub-lab\.door · labels from room · as logs$/);
  });
});
