// Tests for check.mjs: the shipped workbook passes; every deliberate fault in
// ../testdata/bad-workbook-kql.workbook.json is reported with its reason.
//
//   node --test test.mjs        (npm ci first)

import assert from 'node:assert/strict';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

import { checkWorkbook, schemaVariants } from './check.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const variants = schemaVariants(path.join(here, 'app-insights-tables.json'));

test('two schema variants: success as bool and as string', () => {
  assert.equal(variants.length, 2);
  assert.match(variants[0].name, /requests\.success:bool/);
  assert.match(variants[1].name, /requests\.success:string/);
});

test('the shipped workbook passes', () => {
  const r = checkWorkbook(path.join(here, '..', '..', 'workbooks', 'tally.workbook.json'), variants);
  assert.ok(r.queries.length >= 10, `${r.queries.length} queries`);
  assert.deepEqual(r.queries.filter((q) => q.errors.length).map((q) => [q.where, q.errors]), []);
  const recon = r.queries.find((q) => q.where.includes('reconciliation'));
  assert.ok(recon, 'reconciliation query');
  const cols = recon.columns.map((c) => c.name);
  for (const c of ['tenant', 'meter', 'forwarded', 'ledger_total', 'difference', 'status']) assert.ok(cols.includes(c), c);
});

test('every deliberate fault is reported', () => {
  const r = checkWorkbook(path.join(here, '..', 'testdata', 'bad-workbook-kql.workbook.json'), variants);
  const byName = Object.fromEntries(r.queries.map((q) => [q.where.replace(/^.*?\((.*?)\).*$/, '$1'), q.errors.join('\n')]));
  const want = {
    parameters: /third column \(default selection\) is long/,
    'misspelt column': /KS142 .*'durration'/,
    'syntax error': /KS005 Expected: \)/,
    'unknown function': /KS211 .*'percentil'/,
    'workspace table on a classic resource': /KS204 .*'AppRequests'/,
    'success used as a bool': /type bool expected[\s\S]*success:string/,
    'formatter on a missing column': /formatter for column "failed_pct"/,
    'timechart without time': /timechart without a datetime column/,
    'multi-select compared with ==': /Tenant="'acme','globex'"/,
    'unknown parameter': /\{Operation\} is not a parameter/,
  };
  for (const [name, re] of Object.entries(want)) assert.match(byName[name] ?? '(not reported)', re, name);
  assert.equal(r.failures, Object.keys(want).length);
});
