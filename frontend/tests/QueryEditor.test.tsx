import { cleanup, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import React from 'react';

import { QueryEditor } from '../src/components/QueryEditor';
import { DataSource } from '../src/datasource';
import { StreamQuery } from '../src/types';
import { datasource, useVariables } from './fakes';

function setup(query: StreamQuery, ds: DataSource = datasource()) {
  vi.spyOn(ds, 'getResource').mockRejectedValue(new Error('no backend in this test'));
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

  it('sets alias, unit and mode, and shows them with the path', async () => {
    const user = userEvent.setup();
    const { onChange, onRunQuery, view } = setup(TUTORIAL);
    await user.type(screen.getByLabelText('Unit'), 'c');
    expect(onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, unit: 'c' });
    await user.click(screen.getByText('Latest value'));
    expect(onChange).toHaveBeenLastCalledWith({ ...TUTORIAL, mode: 'latest' });
    expect(onRunQuery).toHaveBeenCalledTimes(2); // on leaving Unit, and on choosing the mode
    view.rerender(<QueryEditor query={{ ...TUTORIAL, alias: 'room {{series}}', unit: 'celsius' }} onChange={onChange} onRunQuery={onRunQuery} datasource={datasource()} />);
    expect(screen.getByTestId('zmqstream-path').textContent).toBe('Stream path: custom-10-20-100 · legend “room {{series}}” · unit celsius');
  });

  it('refuses an alias longer than the backend takes, and a buffer that is not a row count', () => {
    setup({ ...TUTORIAL, alias: 'x'.repeat(65), bufferRows: '1.5' });
    const errors = screen.getByTestId('zmqstream-errors').textContent;
    expect(errors).toMatch(/Alias must be at most 64 characters/);
    expect(errors).toMatch(/Buffer must be empty/);
  });
});

describe('QueryEditor kinds', () => {
  it('offers a source name and its tick for a source, a channel name for a published channel', async () => {
    const user = userEvent.setup();
    const { onChange, view } = setup({ refId: 'A', kind: 'source', source: 'meter', tickInterval: 500 });
    expect(screen.queryByLabelText('Lower Limit')).toBeNull();
    expect(screen.getByLabelText('Tick interval (ms)')).toHaveProperty('value', '500');
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('source-meter-500');
    await user.click(screen.getByText('host')); // the picker: the backend's sources, or the built-in one
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ source: 'host' }));
    await user.click(screen.getByText('Published'));
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ kind: 'published' }));
    view.rerender(
      <QueryEditor query={{ refId: 'A', kind: 'published', channel: 'lab.door' }} onChange={onChange} onRunQuery={vi.fn()} datasource={datasource()} />
    );
    expect(screen.getByLabelText('Channel')).toHaveProperty('value', 'lab.door');
    expect(screen.queryByLabelText('Tick interval (ms)')).toBeNull();
    expect(screen.getByTestId('zmqstream-path').textContent).toContain('pub-lab.door');
  });
});
