import { QueryEditorProps } from '@grafana/data';
import { Alert, InlineField, InlineFieldRow, Input, RadioButtonGroup } from '@grafana/ui';
import React, { ChangeEvent, useEffect, useMemo, useState } from 'react';

import { QueryErrors, streamPath, validate, withDefaults } from '../channel';
import { DataSource } from '../datasource';
import { BUILTIN_GENERATORS, GeneratorInfo, Limits, QueryFields, StreamOptions, StreamQuery } from '../types';

type Props = QueryEditorProps<DataSource, StreamQuery, StreamOptions>;
type NumberField = 'lowerLimit' | 'upperLimit' | 'tickInterval' | 'series';

const NUMBER_FIELDS: Array<{ field: NumberField; label: string; tooltip: string }> = [
  { field: 'lowerLimit', label: 'Lower Limit', tooltip: 'Smallest value the generator produces' },
  { field: 'upperLimit', label: 'Upper Limit', tooltip: 'Largest value the generator produces' },
  { field: 'tickInterval', label: 'Tick interval (ms)', tooltip: 'Time between two values' },
  { field: 'series', label: 'Series', tooltip: 'Values per tick, one field each' },
];

/**
 * The tutorial's three inputs plus generator and series. Each keystroke updates the query
 * (numbers are kept as typed so "-" or "1." can be finished); a valid query runs on blur;
 * an invalid one shows why and runs nothing.
 */
export function QueryEditor({ query, onChange, onRunQuery, datasource }: Props) {
  const fields = withDefaults(query);
  const [typed, setTyped] = useState<Record<NumberField, string>>(() => ({
    lowerLimit: String(fields.lowerLimit),
    upperLimit: String(fields.upperLimit),
    tickInterval: String(fields.tickInterval),
    series: String(fields.series),
  }));
  const [generators, setGenerators] = useState<GeneratorInfo[]>(BUILTIN_GENERATORS);
  const [limits, setLimits] = useState<Limits>(datasource.limits);

  useEffect(() => {
    let live = true;
    datasource.generators().then((found) => live && setGenerators(found));
    datasource.effectiveLimits().then((found) => live && setLimits(found));
    return () => {
      live = false;
    };
  }, [datasource]);

  const parsed: QueryFields = { ...fields, ...parseTyped(typed) };
  const errors: QueryErrors = useMemo(() => validate(parsed, limits), [parsed, limits]);
  const valid = Object.keys(errors).length === 0;

  const onNumber = (field: NumberField) => (event: ChangeEvent<HTMLInputElement>) => {
    const text = event.currentTarget.value;
    setTyped({ ...typed, [field]: text });
    onChange({ ...query, [field]: text.trim() === '' ? Number.NaN : Number(text) });
  };
  const runIfValid = () => {
    if (valid) {
      onRunQuery();
    }
  };

  return (
    <div>
      <InlineFieldRow>
        {NUMBER_FIELDS.map(({ field, label, tooltip }) => (
          <InlineField key={field} label={label} tooltip={tooltip} labelWidth={18} invalid={Boolean(errors[field])}>
            <Input
              id={`zmqstream-${field}`}
              aria-label={label}
              type="number"
              width={14}
              value={typed[field]}
              onChange={onNumber(field)}
              onBlur={runIfValid}
            />
          </InlineField>
        ))}
      </InlineFieldRow>
      <InlineFieldRow>
        <InlineField label="Generator" labelWidth={18} tooltip={generators.find((g) => g.name === fields.generator)?.description}>
          <RadioButtonGroup
            options={generators.map((g) => ({ label: g.name, value: g.name, description: g.description }))}
            value={fields.generator}
            onChange={(generator) => {
              onChange({ ...query, generator });
              if (Object.keys(validate({ ...parsed, generator }, limits)).length === 0) {
                onRunQuery();
              }
            }}
          />
        </InlineField>
      </InlineFieldRow>
      {valid ? (
        <div data-testid="zmqstream-path" style={{ opacity: 0.7, fontSize: 12, padding: '4px 0' }}>
          Stream path: <code>{streamPath(parsed)}</code>
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

function parseTyped(typed: Record<NumberField, string>): Partial<QueryFields> {
  const out: Partial<QueryFields> = {};
  for (const [field, text] of Object.entries(typed) as Array<[NumberField, string]>) {
    out[field] = text.trim() === '' ? Number.NaN : Number(text);
  }
  return out;
}
