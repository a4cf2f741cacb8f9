import { DataSourcePluginOptionsEditorProps } from '@grafana/data';
import { InlineField, InlineSwitch, Input, SecretInput } from '@grafana/ui';
import React, { ChangeEvent } from 'react';

import { DEFAULT_LIMITS, StreamOptions, StreamSecureOptions } from '../types';

type Props = DataSourcePluginOptionsEditorProps<StreamOptions, StreamSecureOptions>;
type SecretSetting = keyof StreamSecureOptions;
type NumberSetting = 'minTickMs' | 'maxSeries' | 'maxChannels' | 'maxValuesPerSecond';

/**
 * Each limit can only tighten the plugin's (grafana.ini [plugin.zmqstream-stream-datasource]);
 * the placeholder is the plugin's default (services/common/config.py), which an empty field keeps.
 */
const NUMBER_SETTINGS: Array<{ key: NumberSetting; label: string; placeholder: string; tooltip: string }> = [
  {
    key: 'minTickMs',
    label: 'Minimum tick (ms)',
    placeholder: String(DEFAULT_LIMITS.minTickMs),
    tooltip: "Queries may not tick faster than this. It can only raise the plugin's min_tick_ms (1 ms by default)",
  },
  {
    key: 'maxSeries',
    label: 'Max series',
    placeholder: String(DEFAULT_LIMITS.maxSeries),
    tooltip: "Most series one query may ask for. It can only lower the plugin's max_series (10 by default)",
  },
  {
    key: 'maxChannels',
    label: 'Max channels',
    placeholder: '1,000',
    tooltip: "Most streams this datasource runs at once. It can only lower the plugin's max_channels_per_datasource (1,000 by default)",
  },
  {
    key: 'maxValuesPerSecond',
    label: 'Max values/s',
    placeholder: '50,000',
    tooltip:
      "Most values per second (rows/s times series) this datasource's streams carry at once; new streams past it are refused. " +
      "It can only lower the plugin's max_values_per_s_per_datasource (50,000 by default)",
  },
];

const SECRET_SETTINGS: Array<{ key: SecretSetting; label: string; tooltip: string }> = [
  {
    key: 'curveSecretKey',
    label: 'CURVE secret key',
    tooltip:
      "This datasource's CURVE secret key: paste the key or the whole .key_secret file `zmqstream keys` wrote. " +
      "Its public key must be in the broker's --curve-authorized-dir. Empty: the plugin's own keys, if any.",
  },
  {
    key: 'brokerPublicKey',
    label: 'Broker public key',
    tooltip: "The broker's CURVE public key: paste the key or the whole broker.key file. Set both or neither.",
  },
];

/** The settings the backend reads from jsonData and secureJsonData; every field may stay empty. */
export function ConfigEditor({ options, onOptionsChange }: Props) {
  const jsonData = options.jsonData;
  const update = (changes: Partial<StreamOptions>) =>
    onOptionsChange({ ...options, jsonData: { ...jsonData, ...changes } });
  const secrets = options.secureJsonData ?? {};
  const setSecret = (key: SecretSetting, value: string) =>
    onOptionsChange({ ...options, secureJsonData: { ...secrets, [key]: value } });
  const resetSecret = (key: SecretSetting) =>
    onOptionsChange({
      ...options,
      secureJsonFields: { ...options.secureJsonFields, [key]: false },
      secureJsonData: { ...secrets, [key]: '' },
    });
  const address = jsonData.brokerAddress ?? '';
  const addressError = address && !/^(tcp|ipc):\/\/\S+$/.test(address) ? 'Use tcp://host:port or ipc:///path' : '';

  return (
    <div>
      <InlineField
        label="Broker address"
        labelWidth={22}
        tooltip="The broker's control endpoint. Empty: the plugin's default, grafana.ini [plugin.zmqstream-stream-datasource] control_endpoint (else the ipc socket in its run_dir)."
        invalid={Boolean(addressError)}
        error={addressError}
      >
        <Input
          aria-label="Broker address"
          width={48}
          value={address}
          placeholder="plugin default (grafana.ini control_endpoint)"
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
      <InlineField
        label="Allow publishing"
        labelWidth={22}
        tooltip="Editors and Admins may publish rows into pub-* channels through Grafana Live (the plugin forwards them to the recorder). Off: nobody may."
      >
        <InlineSwitch
          aria-label="Allow publishing"
          value={jsonData.allowPublish === true}
          onChange={(event: React.FormEvent<HTMLInputElement>) => update({ allowPublish: event.currentTarget.checked || undefined })}
        />
      </InlineField>
      {SECRET_SETTINGS.map(({ key, label, tooltip }) => (
        <InlineField key={key} label={label} labelWidth={22} tooltip={tooltip}>
          <SecretInput
            aria-label={label}
            width={48}
            isConfigured={Boolean(options.secureJsonFields?.[key])}
            value={secrets[key] ?? ''}
            placeholder="off (the plugin's own keys)"
            onReset={() => resetSecret(key)}
            onChange={(event: ChangeEvent<HTMLInputElement>) => setSecret(key, event.currentTarget.value.trim())}
          />
        </InlineField>
      ))}
    </div>
  );
}
