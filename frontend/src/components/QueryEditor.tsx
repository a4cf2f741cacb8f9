import { QueryEditorProps } from '@grafana/data';
import { Alert, InlineField, InlineFieldRow, Input, RadioButtonGroup } from '@grafana/ui';
import React, { ChangeEvent, useEffect, useState } from 'react';

import { channelPath, displayOf, kindOf, QueryErrors, validateQuery, withDefaults } from '../channel';
import { DataSource } from '../datasource';
import { BUILTIN_GENERATORS, GeneratorInfo, Limits, QueryKind, StreamMode, StreamOptions, StreamQuery } from '../types';

type Props = QueryEditorProps<DataSource, StreamQuery, StreamOptions>;
type NumberField = 'lowerLimit' | 'upperLimit' | 'tickInterval' | 'series' | 'bufferRows';
type TextField = 'alias' | 'unit' | 'source' | 'channel';

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
 * The tutorial's three inputs plus generator and series, and how the panel shows them
 * (alias, unit, mode, buffer). Number fields take numbers or template variables; what
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
  const [generators, setGenerators] = useState<GeneratorInfo[]>(BUILTIN_GENERATORS);
  const [limits, setLimits] = useState<Limits>(datasource.limits);
  const [sources, setSources] = useState<string[]>(['host']);

  useEffect(() => {
    let live = true;
    datasource.generators().then((found) => live && setGenerators(found));
    datasource.effectiveLimits().then((found) => live && setLimits(found));
    datasource.sources().then((found) => live && setSources(found));
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
      {kind === 'source' && (
        <InlineFieldRow>
          <InlineField label="Source" labelWidth={18} tooltip="An installed source's name: host is built in" invalid={Boolean(errors.source)}>
            <Input id="zmqstream-source" aria-label="Source" width={26} placeholder="host" value={query.source ?? ''} onChange={onText('source')} onBlur={() => runIfValid()} />
          </InlineField>
          <RadioButtonGroup
            options={sources.map((name) => ({ label: name, value: name }))}
            value={(query.source ?? '').trim()}
            onChange={(name) => choose({ source: name })}
          />
        </InlineFieldRow>
      )}
      {kind === 'published' && (
        <InlineFieldRow>
          <InlineField label="Channel" labelWidth={18} tooltip="The published channel's name, without pub-" invalid={Boolean(errors.channel)}>
            <Input id="zmqstream-channel" aria-label="Channel" width={26} placeholder="lab.door" value={query.channel ?? ''} onChange={onText('channel')} onBlur={() => runIfValid()} />
          </InlineField>
        </InlineFieldRow>
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
              options={generators.map((g) => ({ label: g.name, value: g.name, description: g.description }))}
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
        <InlineField label="Unit" labelWidth={8} tooltip="A Grafana unit id: celsius, percent, ms, …" invalid={Boolean(errors.unit)}>
          <Input id="zmqstream-unit" aria-label="Unit" width={16} placeholder="none" value={query.unit ?? ''} onChange={onText('unit')} onBlur={() => runIfValid()} />
        </InlineField>
      </InlineFieldRow>
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
