import { DataSourceSettings } from '@grafana/data';
import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import React, { useState } from 'react';

import { ConfigEditor } from '../src/components/ConfigEditor';
import { StreamOptions, StreamSecureOptions } from '../src/types';
import { instanceSettings } from './fakes';

type Settings = DataSourceSettings<StreamOptions, StreamSecureOptions>;

function Harness({ onSaved, configured = {} }: { onSaved: (options: Settings) => void; configured?: Record<string, boolean> }) {
  const [options, setOptions] = useState({
    ...instanceSettings(),
    jsonData: {},
    secureJsonFields: configured,
  } as unknown as Settings);
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

  it("shows the plugin's per-datasource defaults, which the settings can only tighten", () => {
    render(<Harness onSaved={vi.fn()} />);
    expect(screen.getByLabelText('Max values/s')).toHaveProperty('placeholder', '50,000');
    expect(screen.getByLabelText('Max channels')).toHaveProperty('placeholder', '1,000');
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
    expect(screen.getByPlaceholderText('plugin default (grafana.ini control_endpoint)')).toBeTruthy();
  });

  it('keeps the CURVE keys as secrets, in secureJsonData', async () => {
    const user = userEvent.setup();
    const onSaved = vi.fn();
    render(<Harness onSaved={onSaved} />);
    await user.type(screen.getByLabelText('CURVE secret key'), 'secret-z85');
    await user.type(screen.getByLabelText('Broker public key'), 'public-z85');
    const saved = onSaved.mock.lastCall?.[0];
    expect(saved.secureJsonData).toEqual({ curveSecretKey: 'secret-z85', brokerPublicKey: 'public-z85' });
    expect(saved.jsonData).toEqual({});
    expect(screen.getByLabelText('CURVE secret key')).toHaveProperty('type', 'password');
  });

  it('shows a stored key as configured, and its reset button clears it', async () => {
    const user = userEvent.setup();
    const onSaved = vi.fn();
    render(<Harness onSaved={onSaved} configured={{ curveSecretKey: true }} />);
    expect(screen.getAllByDisplayValue('configured')).toHaveLength(1);
    await user.click(screen.getByRole('button', { name: 'Reset' }));
    const saved = onSaved.mock.lastCall?.[0];
    expect(saved.secureJsonFields).toEqual({ curveSecretKey: false });
    expect(saved.secureJsonData).toEqual({ curveSecretKey: '' });
  });
});

describe('ConfigEditor publishing', () => {
  it('is off by default and the switch writes allowPublish: true', async () => {
    const user = userEvent.setup();
    const onSaved = vi.fn();
    render(<Harness onSaved={onSaved} />);
    const toggle = screen.getByLabelText('Allow publishing');
    expect(toggle).toHaveProperty('checked', false);
    await user.click(toggle);
    expect(onSaved.mock.lastCall?.[0].jsonData).toEqual({ allowPublish: true });
  });
});
