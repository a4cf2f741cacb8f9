import { QueryEditorProps, SelectableValue } from '@grafana/data';
import { getTemplateSrv } from '@grafana/runtime';
import { Alert, InlineField, InlineFieldRow, InlineSwitch, Input, MultiSelect, RadioButtonGroup, Select, UnitPicker } from '@grafana/ui';
import React, { ChangeEvent, useEffect, useState } from 'react';

import { describeFields } from '../catalog';
import { channelPath, displayOf, kindOf, QueryErrors, validateQuery, withDefaults } from '../channel';
import { DataSource } from '../datasource';
import { ChannelInfo, FALLBACK_CATALOG, Limits, QueryKind, StreamCatalog, StreamMode, StreamOptions, StreamQuery } from '../types';

type Props = QueryEditorProps<DataSource, StreamQuery, StreamOptions>;
type NumberField = 'lowerLimit' | 'upperLimit' | 'tickInterval' | 'series' | 'bufferRows';
type TextField = 'alias';

const KINDS: Array<{ label: string; value: QueryKind; description: string }> = [
  { label: 'Generator', value: 'generator', description: 'Values computed from the channel and the tick' },
  { label: 'Source', value: 'source', description: 'A source a worker runs (host metrics, a device), polled every tick' },
  { label: 'Published', value: 'published', description: 'Rows programs publish (zmqstream publish <channel>)' },
];

const CHANNEL_FIELDS: Array<{ field: NumberField; label: string; tooltip: string; placeholder: string }> = [
  { field: 'lowerLimit', label: 'Lower Limit', tooltip: 'Smallest value the generator produces', placeholder: '0' },
  { field: 'upperLimit', label: 'Upper Limit', tooltip: 'Largest value the generator produces', placeholder: '100' },
  { field: 'tickInterval', label: 'Tick interval (ms)', tooltip: 'Time between two values', placeholder: '1000' },
  { field: 'series', label: 'Series', tooltip: 'Values per tick, one field each', placeholder: '1' },
];

const MODES = [
  { label: 'Time series', value: StreamMode.Append, description: 'Every value over the panel range, then live' },
  { label: 'Latest value', value: StreamMode.Latest, description: 'Only the newest value, for stat and gauge panels' },
];

/**
 * The tutorial's three inputs plus generator and series, the source or published channel
 * picked from what the backend knows (typing stays possible, `$variables` too), and how
 * the panel shows them (alias, unit, labels, logs, mode, buffer). Number fields take numbers or template variables; what
 * the query would run is checked with its variables resolved, so a variable with a bad
 * value shows the same message as a bad number typed in. A valid query runs on blur;
 * an invalid one shows why and runs nothing.
 */
export function QueryEditor({ query, onChange, onRunQuery, datasource }: Props) {
  const [typed, setTyped] = useState<Record<NumberField, string>>(() => ({
    lowerLimit: text(query.lowerLimit),
    upperLimit: text(query.upperLimit),
    tickInterval: text(query.tickInterval),
    series: text(query.series),
    bufferRows: text(query.bufferRows),
  }));
  const [catalog, setCatalog] = useState<StreamCatalog>(FALLBACK_CATALOG);
  const [limits, setLimits] = useState<Limits>(datasource.limits);

  useEffect(() => {
    let live = true;
    datasource.catalog().then((found) => live && setCatalog(found));
    datasource.effectiveLimits().then((found) => live && setLimits(found));
    return () => {
      live = false;
    };
  }, [datasource]);

  const current: StreamQuery = { ...query, ...asQuery(typed) }; // numbers as typed, "-" or "1." not finished yet
  const resolved = datasource.applyTemplateVariables(current, {});
  const errors: QueryErrors = validateQuery(resolved, limits, datasource.uid);
  const shown = displayOf(resolved);
  const valid = Object.keys(errors).length === 0;
  const generator = withDefaults(query).generator;
  const kind = kindOf(query);
  const tickField = CHANNEL_FIELDS.find((f) => f.field === 'tickInterval')!;
  const shownFields = kind === 'generator' ? CHANNEL_FIELDS : kind === 'source' ? [tickField] : [];
  const picked = kind === 'source' ? pick(catalog.sources, query.source) : pick(catalog.published, query.channel);
  const variables = getTemplateSrv()
    .getVariables()
    .map((v) => `$${v.name}`);

  const onNumber = (field: NumberField) => (event: ChangeEvent<HTMLInputElement>) => {
    const value = event.currentTarget.value;
    setTyped({ ...typed, [field]: value });
    onChange({ ...query, ...asQuery({ [field]: value }) });
  };
  const onText = (field: TextField) => (event: ChangeEvent<HTMLInputElement>) => {
    onChange({ ...query, [field]: event.currentTarget.value });
  };
  const runIfValid = (next: StreamQuery = current) => {
    const nextErrors = validateQuery(datasource.applyTemplateVariables(next, {}), limits, datasource.uid);
    if (Object.keys(nextErrors).length === 0) {
      onRunQuery();
    }
  };
  const choose = (change: Partial<StreamQuery>) => {
    onChange({ ...query, ...change });
    runIfValid({ ...current, ...change });
  };

  return (
    <div>
      <InlineFieldRow>
        <InlineField label="Kind" labelWidth={18}>
          <RadioButtonGroup options={KINDS} value={kind} onChange={(next) => choose({ kind: next })} />
        </InlineField>
      </InlineFieldRow>
      {kind !== 'generator' && (
        <InlineFieldRow>
          <StreamPicker
            kind={kind}
            value={(kind === 'source' ? query.source : query.channel) ?? ''}
            channels={kind === 'source' ? catalog.sources : catalog.published}
            variables={variables}
            invalid={Boolean(kind === 'source' ? errors.source : errors.channel)}
            onChange={(name) => choose(kind === 'source' ? { source: name } : { channel: name })}
          />
          <div data-testid="zmqstream-fields" style={{ opacity: 0.7, fontSize: 12, alignSelf: 'center', paddingLeft: 8 }}>
            {describeFields(picked)}
          </div>
        </InlineFieldRow>
      )}
      {catalog.problems.length > 0 && (
        <div data-testid="zmqstream-catalog-problems" style={{ opacity: 0.7, fontSize: 12, padding: '0 0 4px' }}>
          Lists may be incomplete: {catalog.problems.join('; ')}
        </div>
      )}
      <InlineFieldRow>
        {shownFields.map(({ field, label, tooltip, placeholder }) => (
          <InlineField key={field} label={label} tooltip={tooltip} labelWidth={18} invalid={Boolean(errors[field])}>
            <Input
              id={`zmqstream-${field}`}
              aria-label={label}
              width={14}
              placeholder={placeholder}
              value={typed[field]}
              onChange={onNumber(field)}
              onBlur={() => runIfValid()}
            />
          </InlineField>
        ))}
      </InlineFieldRow>
      {kind === 'generator' && (
        <InlineFieldRow>
          <InlineField label="Generator" labelWidth={18} invalid={Boolean(errors.generator)}>
            <RadioButtonGroup
              options={catalog.generators.map((g) => ({ label: g.name, value: g.name, description: g.description }))}
              value={generator}
              onChange={(name) => choose({ generator: name })}
            />
          </InlineField>
        </InlineFieldRow>
      )}
      <InlineFieldRow>
        <InlineField label="Alias" labelWidth={18} tooltip="Legend name; {{series}} becomes the series number" invalid={Boolean(errors.alias)}>
          <Input id="zmqstream-alias" aria-label="Alias" width={26} placeholder="value {{series}}" value={query.alias ?? ''} onChange={onText('alias')} onBlur={() => runIfValid()} />
        </InlineField>
        <InlineField label="Unit" labelWidth={8} tooltip="Grafana's units; type a custom one or a $variable" invalid={Boolean(errors.unit)} data-testid="zmqstream-unit">
          <UnitPicker id="zmqstream-unit" width={24} value={query.unit || undefined} onChange={(unit) => choose({ unit: unit ?? '' })} />
        </InlineField>
      </InlineFieldRow>
      {kind !== 'generator' && (
        <InlineFieldRow>
          <InlineField
            label="Label fields"
            labelWidth={18}
            tooltip="Text fields whose values label the other fields (legend, Labels to fields), instead of being fields themselves"
            invalid={Boolean(errors.labels)}
          >
            <MultiSelect
              inputId="zmqstream-labels"
              aria-label="Label fields"
              width={40}
              placeholder="none"
              allowCustomValue
              options={withCurrent(
                (picked?.fields ?? []).filter((f) => f.type === 'string').map((f) => f.name).concat(variables),
                query.labels ?? []
              )}
              value={query.labels ?? []}
              onChange={(chosen: Array<SelectableValue<string>>) => choose({ labels: chosen.map((c) => c.value ?? '').filter((v) => v !== '') })}
            />
          </InlineField>
          <InlineField label="Logs" labelWidth={8} tooltip="Ask Grafana to show the rows in its Logs panel (text rows: a message per row)">
            <InlineSwitch id="zmqstream-logs" aria-label="Logs" value={query.logs === true} onChange={(event) => choose({ logs: event.currentTarget.checked || undefined })} />
          </InlineField>
        </InlineFieldRow>
      )}
      <InlineFieldRow>
        <InlineField label="Mode" labelWidth={18}>
          <RadioButtonGroup options={MODES} value={query.mode ?? StreamMode.Append} onChange={(mode) => choose({ mode })} />
        </InlineField>
        <InlineField label="Buffer (rows)" labelWidth={14} tooltip="Most rows the panel keeps; empty keeps its time range" invalid={Boolean(errors.bufferRows)}>
          <Input
            id="zmqstream-bufferRows"
            aria-label="Buffer (rows)"
            width={16}
            placeholder="panel range"
            value={typed.bufferRows}
            onChange={onNumber('bufferRows')}
            onBlur={() => runIfValid()}
          />
        </InlineField>
      </InlineFieldRow>
      {valid ? (
        <div data-testid="zmqstream-path" style={{ opacity: 0.7, fontSize: 12, padding: '4px 0' }}>
          Stream path: <code>{channelPath(resolved)}</code>
          {shown.alias && <> · legend “{shown.alias}”</>}
          {shown.unit && <> · unit {shown.unit}</>}
          {shown.labels.length > 0 && <> · labels from {shown.labels.join(', ')}</>}
          {shown.logs && <> · as logs</>}
        </div>
      ) : (
        <Alert severity="error" title="This query cannot stream" data-testid="zmqstream-errors">
          <ul>
            {Object.entries(errors).map(([field, message]) => (
              <li key={field}>{message}</li>
            ))}
          </ul>
        </Alert>
      )}
    </div>
  );
}

/** The source or published channel: a pick from what the backend knows, or typed (a `$variable` too). */
function StreamPicker(props: {
  kind: QueryKind;
  value: string;
  channels: ChannelInfo[];
  variables: string[];
  invalid: boolean;
  onChange: (name: string) => void;
}) {
  const { kind, value, channels, variables, invalid, onChange } = props;
  const label = kind === 'source' ? 'Source' : 'Channel';
  const tooltip =
    kind === 'source'
      ? 'An installed source (host is built in); its fields once the recorder has its rows'
      : 'A published channel the recorder knows, without pub-; type a new one to stream it before its first row';
  const options: Array<SelectableValue<string>> = withCurrent(
    channels.map((c) => c.name),
    value.trim() ? [value.trim()] : []
  ).map((option) => ({ ...option, description: option.value?.startsWith('$') ? 'dashboard variable' : describeFields(channels.find((c) => c.name === option.value)) }));
  for (const name of variables) {
    if (!options.some((o) => o.value === name)) {
      options.push({ label: name, value: name, description: 'dashboard variable' });
    }
  }
  return (
    <InlineField label={label} labelWidth={18} tooltip={tooltip} invalid={invalid}>
      <Select
        inputId={`zmqstream-${kind === 'source' ? 'source' : 'channel'}`}
        aria-label={label}
        width={32}
        placeholder={kind === 'source' ? 'host' : 'pick or type a channel'}
        allowCustomValue
        options={options}
        value={value.trim() || null}
        onChange={(chosen: SelectableValue<string>) => onChange(chosen?.value ?? '')}
        onCreateOption={(typed: string) => onChange(typed.trim())}
      />
    </InlineField>
  );
}

/** Options for `names`, plus those of `current` not among them (a typed or saved value stays shown). */
function withCurrent(names: string[], current: string[]): Array<SelectableValue<string>> {
  const all = [...names, ...current.filter((c) => !names.includes(c))];
  return [...new Set(all)].map((name) => ({ label: name, value: name }));
}

function pick(channels: ChannelInfo[], name: string | undefined): ChannelInfo | undefined {
  return channels.find((c) => c.name === (name ?? '').trim());
}

/** Typed number fields as the query holds them: numbers, or text such as `$lower`. */
function asQuery(typed: Partial<Record<NumberField, string>>): Partial<StreamQuery> {
  const out: Partial<Record<NumberField, number | string>> = {};
  for (const [field, value] of Object.entries(typed) as Array<[NumberField, string]>) {
    const number = Number(value);
    out[field] = value.trim() !== '' && Number.isFinite(number) ? number : value;
  }
  return out;
}

function text(value: number | string | undefined): string {
  return value === undefined ? '' : String(value);
}
