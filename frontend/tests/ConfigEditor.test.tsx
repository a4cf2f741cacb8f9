import { DataSourceSettings } from '@grafana/data';
import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import React, { useState } from 'react';

import { ConfigEditor } from '../src/components/ConfigEditor';
import { StreamOptions } from '../src/types';
import { instanceSettings } from './fakes';

function Harness({ onSaved }: { onSaved: (options: DataSourceSettings<StreamOptions>) => void }) {
  const [options, setOptions] = useState({
    ...instanceSettings(),
    jsonData: {},
    secureJsonFields: {},
  } as unknown as DataSourceSettings<StreamOptions>);
  return (
    <ConfigEditor
      options={options}
      onOptionsChange={(next) => {
        setOptions(next);
        onSaved(next);
      }}
    />
  );
}

describe('ConfigEditor', () => {
  it('writes the settings the backend reads into jsonData', async () => {
    const user = userEvent.setup();
    const onSaved = vi.fn();
    render(<Harness onSaved={onSaved} />);
    await user.type(screen.getByLabelText('Broker address'), 'tcp://10.0.0.5:5570');
    await user.type(screen.getByLabelText('Minimum tick (ms)'), '20');
    await user.type(screen.getByLabelText('Max channels'), '50');
    await user.type(screen.getByLabelText('Max values/s'), '5000');
    expect(onSaved.mock.lastCall?.[0].jsonData).toEqual({
      brokerAddress: 'tcp://10.0.0.5:5570',
      minTickMs: 20,
      maxChannels: 50,
      maxValuesPerSecond: 5000,
    });
  });

  it('says what a broker address should look like', async () => {
    const user = userEvent.setup();
    render(<Harness onSaved={vi.fn()} />);
    await user.type(screen.getByLabelText('Broker address'), 'localhost:5570');
    expect(screen.getByText('Use tcp://host:port or ipc:///path')).toBeTruthy();
  });

  it('works out of the box with every field empty', () => {
    render(<Harness onSaved={vi.fn()} />);
    expect(screen.getByLabelText('Broker address')).toHaveProperty('value', '');
    expect(screen.getByPlaceholderText('plugin default (ipc under ZMQSTREAM_RUN_DIR)')).toBeTruthy();
  });
});
