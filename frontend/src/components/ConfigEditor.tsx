import { DataSourcePluginOptionsEditorProps } from '@grafana/data';
import { InlineField, Input } from '@grafana/ui';
import React, { ChangeEvent } from 'react';

import { DEFAULT_LIMITS, StreamOptions } from '../types';

type Props = DataSourcePluginOptionsEditorProps<StreamOptions>;
type NumberSetting = 'minTickMs' | 'maxSeries' | 'maxChannels' | 'maxValuesPerSecond';

const NUMBER_SETTINGS: Array<{ key: NumberSetting; label: string; placeholder: string; tooltip: string }> = [
  { key: 'minTickMs', label: 'Minimum tick (ms)', placeholder: String(DEFAULT_LIMITS.minTickMs), tooltip: 'Queries may not tick faster than this' },
  { key: 'maxSeries', label: 'Max series', placeholder: String(DEFAULT_LIMITS.maxSeries), tooltip: 'Most series one query may ask for' },
  { key: 'maxChannels', label: 'Max channels', placeholder: '1000', tooltip: 'Most streams this datasource runs at once' },
  {
    key: 'maxValuesPerSecond',
    label: 'Max values/s',
    placeholder: '100000',
    tooltip: 'Most values per second (rows/s times series) its streams carry at once; new streams past it are refused',
  },
];

/** The settings the backend reads from jsonData; every field may stay empty (defaults work). */
export function ConfigEditor({ options, onOptionsChange }: Props) {
  const jsonData = options.jsonData;
  const update = (changes: Partial<StreamOptions>) =>
    onOptionsChange({ ...options, jsonData: { ...jsonData, ...changes } });
  const address = jsonData.brokerAddress ?? '';
  const addressError = address && !/^(tcp|ipc):\/\/\S+$/.test(address) ? 'Use tcp://host:port or ipc:///path' : '';

  return (
    <div>
      <InlineField
        label="Broker address"
        labelWidth={22}
        tooltip="The broker's control endpoint. Empty: the plugin's default (ipc socket under ZMQSTREAM_RUN_DIR)."
        invalid={Boolean(addressError)}
        error={addressError}
      >
        <Input
          aria-label="Broker address"
          width={48}
          value={address}
          placeholder="plugin default (ipc under ZMQSTREAM_RUN_DIR)"
          onChange={(event: ChangeEvent<HTMLInputElement>) => update({ brokerAddress: event.currentTarget.value.trim() })}
        />
      </InlineField>
      {NUMBER_SETTINGS.map(({ key, label, placeholder, tooltip }) => (
        <InlineField key={key} label={label} labelWidth={22} tooltip={tooltip}>
          <Input
            aria-label={label}
            type="number"
            width={16}
            min={0}
            value={jsonData[key] ?? ''}
            placeholder={placeholder}
            onChange={(event: ChangeEvent<HTMLInputElement>) => {
              const text = event.currentTarget.value;
              update({ [key]: text === '' ? undefined : Number(text) });
            }}
          />
        </InlineField>
      ))}
    </div>
  );
}
