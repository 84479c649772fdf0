#!/usr/bin/env node
// Analyses the KQL of Azure Monitor workbook templates with Microsoft's own
// Kusto language service (@kusto/language-service-next: Kusto.Language, the
// parser and semantic analyser behind the Azure Data Explorer and Log
// Analytics editors, compiled to JavaScript), against the table schemas in
// app-insights-tables.json. Nothing is executed: there is no Kusto engine here.
//
//   node check.mjs FILE.workbook.json [...] [--tables app-insights-tables.json] [--json]
//
// For every query item (type 3, queryType 0) and every parameter query, the
// workbook's {Parameter} references are replaced the way Workbooks formats
// them, in several variants each:
//   time range (type 4)  {P} -> "> ago(1d)" and "between (datetime(..) .. datetime(..))",
//                        {P:grain} -> 1h, {P:start}/{P:end} -> datetime(..);
//   dropdown (type 2)    multi-select: the "All" value (selectAllValue) and two
//                        values, each with the parameter's quote and delimiter;
//                        single: a sample string;
//   other parameters     a sample string.
// Each variant is analysed once per table schema variant (a column declared
// with several types, such as `success`, is tried with each).
//
// Failures: any diagnostic of severity Error (syntax, unknown table, column or
// function, wrong argument types, ...); a result that is not a table; a
// gridSettings formatter whose columnMatch names no result column; a
// timechart without a datetime column or without a numeric one; a barchart
// without a numeric column; a dropdown parameter query that returns no
// column, or whose third column (the default selection) is not bool.
// Exit status 1 on any failure.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function loadKusto() {
  try {
    require('@kusto/language-service-next/bridge.js');
    require('@kusto/language-service-next/Kusto.Language.Bridge.js');
  } catch (e) {
    console.error(`cannot load @kusto/language-service-next (run npm ci in ${here}): ${e.message}`);
    process.exit(2);
  }
  return globalThis.Kusto.Language;
}

const L = loadKusto();
const S = L.Symbols;

const NUMERIC = new Set(['int', 'long', 'real', 'decimal']);
const TIME_VARIANTS = [
  { base: '> ago(1d)', start: 'datetime(2026-11-01T00:00:00Z)', end: 'datetime(2026-11-02T00:00:00Z)', grain: '1h' },
  {
    base: 'between (datetime(2026-11-01T00:00:00Z) .. datetime(2026-11-02T00:00:00Z))',
    start: 'datetime(2026-11-01T00:00:00Z)',
    end: 'datetime(2026-11-02T00:00:00Z)',
    grain: '5m',
  },
];
const PARAM_RE = /\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\}/g;

// ---------------------------------------------------------------------------
// Schemas

export function schemaVariants(tablesFile) {
  const spec = JSON.parse(fs.readFileSync(tablesFile, 'utf8'));
  const multi = [];
  for (const [t, cols] of Object.entries(spec.tables)) {
    for (const [c, ty] of Object.entries({ ...spec.common, ...cols })) {
      if (Array.isArray(ty)) multi.push(ty.length);
    }
  }
  const n = Math.max(1, ...multi);
  const variants = [];
  for (let i = 0; i < n; i++) {
    const tables = [];
    const desc = [];
    for (const [t, cols] of Object.entries(spec.tables)) {
      const all = { ...spec.common, ...cols };
      const parts = [];
      for (const [c, ty] of Object.entries(all)) {
        const pick = Array.isArray(ty) ? ty[Math.min(i, ty.length - 1)] : ty;
        if (Array.isArray(ty)) desc.push(`${t}.${c}:${pick}`);
        parts.push(`['${c}']:${pick}`);
      }
      tables.push(new S.TableSymbol.$ctor7(t, `(${parts.join(', ')})`, null));
    }
    const db = new S.DatabaseSymbol.ctor('appinsights', tables);
    variants.push({ name: [...new Set(desc)].join(', ') || 'default', globals: L.GlobalState.Default.WithDatabase(db) });
  }
  return variants;
}

// ---------------------------------------------------------------------------
// Workbook walking and parameter formatting

function* walkItems(items, where = 'items') {
  for (const [i, it] of (items ?? []).entries()) {
    if (!it || typeof it !== 'object') continue;
    const p = `${where}[${i}]${it.name ? ` (${it.name})` : ''}`;
    yield [p, it];
    if (it.type === 12) yield* walkItems(it.content?.items, `${p}.items`);
  }
}

function parameterSamples(prm) {
  // -> list of {format -> text} maps, one per variant
  if (prm.type === 4) {
    return TIME_VARIANTS.map((t) => ({ '': t.base, value: t.base, grain: t.grain, start: t.start, end: t.end, label: 'Last 24 hours' }));
  }
  if (prm.type === 2) {
    if (prm.multiSelect) {
      const quote = prm.quote ?? "'";
      const delim = prm.delimiter ?? ',';
      const fmt = (vals) => vals.map((v) => `${quote}${v}${quote}`).join(delim);
      const out = [];
      const ts = prm.typeSettings ?? {};
      if ((ts.additionalResourceOptions ?? []).includes('value::all') && ts.selectAllValue !== undefined) {
        out.push(ts.selectAllValue === '' ? '' : fmt([ts.selectAllValue]));
      }
      out.push(fmt(['acme', 'globex']));
      return out.map((v) => ({ '': v, value: v, label: v, escape: v }));
    }
    return [{ '': '2026-11', value: '2026-11', label: '2026-11', escape: '2026-11' }];
  }
  if (prm.type === 5) return [{ '': '/subscriptions/x/resourcegroups/y', value: 'resource', label: 'resource' }];
  return [{ '': 'sample', value: 'sample', label: 'sample', escape: 'sample' }];
}

function substitutions(query, params) {
  // every combination would explode; vary one parameter at a time around the first variant
  const used = [...new Set([...query.matchAll(PARAM_RE)].map((m) => m[1]))];
  const samples = Object.fromEntries(used.map((n) => [n, params[n] ? parameterSamples(params[n]) : null]));
  const missing = used.filter((n) => !samples[n]);
  const base = Object.fromEntries(used.filter((n) => samples[n]).map((n) => [n, samples[n][0]]));
  const describe = (c) => used.filter((n) => c[n]).map((n) => `${n}=${JSON.stringify(c[n][''])}`).join(' ') || 'no parameters';
  const combos = [base];
  for (const n of used) {
    for (const s of (samples[n] ?? []).slice(1)) combos.push({ ...base, [n]: s });
  }
  const seen = new Set();
  const texts = [];
  for (const c of combos) {
    const text = query.replace(PARAM_RE, (all, name, fmt) => {
      const s = c[name];
      if (!s) return all;
      const v = s[fmt ?? ''];
      return v === undefined ? s[''] : v;
    });
    if (!seen.has(text)) {
      seen.add(text);
      texts.push({ text, label: describe(c) });
    }
  }
  return { texts, missing };
}

// ---------------------------------------------------------------------------
// Analysis

function resultColumns(code) {
  const rt = code.ResultType;
  if (!rt || !rt.Columns) return null;
  const cols = [];
  for (let i = 0; i < rt.Columns.Count; i++) {
    const c = rt.Columns.getItem(i);
    cols.push({ name: c.Name, type: c.Type?.Name ?? '?' });
  }
  return cols;
}

function analyse(text, globals) {
  const code = L.KustoCode.ParseAndAnalyze(text, globals);
  const diags = code.GetDiagnostics();
  const errors = [];
  const warnings = [];
  for (let i = 0; i < diags.Count; i++) {
    const d = diags.getItem(i);
    const line = text.slice(0, d.Start).split('\n').length;
    const msg = `${d.Code} ${d.Message} (line ${line}: ${JSON.stringify(text.slice(d.Start, d.Start + Math.max(d.Length, 1)).slice(0, 60))})`;
    if (String(d.Severity) === 'Error') errors.push(msg);
    else warnings.push(msg);
  }
  return { errors, warnings, columns: resultColumns(code) };
}

function columnMatches(pattern, name) {
  if (pattern === name) return true;
  try {
    return new RegExp(`^(?:${pattern})$`).test(name);
  } catch {
    return false;
  }
}

function checkShape(kind, content, columns) {
  const errs = [];
  if (!columns) return ['the query does not return a table'];
  const names = columns.map((c) => c.name);
  if (kind === 'item') {
    for (const f of content.gridSettings?.formatters ?? []) {
      if (f.columnMatch && !names.some((n) => columnMatches(f.columnMatch, n))) {
        errs.push(`gridSettings formatter for column ${JSON.stringify(f.columnMatch)}: no such result column (${names.join(', ')})`);
      }
    }
    const viz = content.visualization;
    const numeric = columns.some((c) => NUMERIC.has(c.type));
    if (['timechart', 'linechart', 'areachart', 'scatterchart'].includes(viz)) {
      if (viz === 'timechart' && !columns.some((c) => c.type === 'datetime')) errs.push(`${viz} without a datetime column`);
      if (!numeric) errs.push(`${viz} without a numeric column`);
    }
    if (['barchart', 'piechart', 'tiles'].includes(viz) && !numeric) errs.push(`${viz} without a numeric column`);
  } else if (kind === 'dropdown') {
    if (columns.length === 0) errs.push('dropdown query returns no column');
    if (columns.length >= 3 && columns[2].type !== 'bool') errs.push(`dropdown query's third column (default selection) is ${columns[2].type}, not bool`);
  }
  return errs;
}

export function checkWorkbook(file, variants) {
  const wb = JSON.parse(fs.readFileSync(file, 'utf8'));
  const items = [...walkItems(wb.items)];
  const params = {};
  for (const [, it] of items) {
    if (it.type === 9) for (const p of it.content?.parameters ?? []) if (p?.name) params[p.name] = p;
  }
  const queries = [];
  for (const [where, it] of items) {
    if (it.type === 3 && (it.content?.queryType ?? 0) === 0 && it.content?.query) {
      queries.push({ where: `${where} ${JSON.stringify(it.content.title ?? '')}`, query: it.content.query, kind: 'item', content: it.content });
    }
    if (it.type === 9) {
      for (const p of it.content?.parameters ?? []) {
        if (p?.query && (p.queryType ?? 0) === 0) {
          queries.push({ where: `${where} parameter ${p.name}`, query: p.query, kind: p.type === 2 ? 'dropdown' : 'parameter', content: p });
        }
      }
    }
  }
  const results = [];
  for (const q of queries) {
    const { texts, missing } = substitutions(q.query, params);
    const errors = missing.map((n) => `{${n}} is not a parameter of the workbook`);
    const found = new Map(); // message -> analyses it came from
    const warnings = new Set();
    let columns = null;
    const total = texts.length * variants.length;
    for (const v of variants) {
      for (const t of texts) {
        const r = analyse(t.text, v.globals);
        for (const e of [...r.errors, ...checkShape(q.kind, q.content, r.columns)]) {
          if (!found.has(e)) found.set(e, []);
          found.get(e).push(`${t.label}; ${v.name}`);
        }
        for (const w of r.warnings) warnings.add(w);
        columns ??= r.columns;
      }
    }
    for (const [e, where] of found) {
      errors.push(where.length === total ? e : `${e}\n           with ${where.join('\n           and  ')}`);
    }
    results.push({ where: q.where, variants: total, errors, warnings: [...warnings], columns });
  }
  return { file, queries: results, failures: results.filter((r) => r.errors.length).length };
}

function main(args) {
  const json = args.includes('--json');
  let tables = path.join(here, 'app-insights-tables.json');
  const files = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--json') continue;
    if (args[i] === '--tables') tables = args[++i];
    else files.push(args[i]);
  }
  if (files.length === 0) {
    console.error('usage: node check.mjs FILE.workbook.json [...] [--tables FILE] [--json]');
    return 2;
  }
  const variants = schemaVariants(tables);
  const reports = files.map((f) => checkWorkbook(f, variants));
  if (json) {
    console.log(JSON.stringify(reports, null, 2));
  } else {
    for (const r of reports) {
      console.log(`== ${r.file}: ${r.queries.length} KQL queries, schema variants: ${variants.map((v) => v.name).join(' | ')}`);
      for (const q of r.queries) {
        const cols = q.columns ? q.columns.slice(0, 12).map((c) => `${c.name}:${c.type}`).join(', ') + (q.columns.length > 12 ? `, ... (${q.columns.length} columns)` : '') : '-';
        console.log(`  ${q.errors.length ? 'FAIL' : 'ok  '} ${q.where} (${q.variants} analyses) -> ${cols}`);
        for (const e of q.errors) console.log(`         ${e}`);
        for (const w of q.warnings) console.log(`         warning: ${w}`);
      }
      console.log(`  -> ${r.queries.length - r.failures} ok, ${r.failures} failed`);
    }
  }
  return reports.some((r) => r.failures) ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exit(main(process.argv.slice(2)));
}
