#!/usr/bin/env node
// Type-checks Grafana dashboards (Classic JSON) against @grafana/schema.
//
//   node check.mjs DASHBOARD.json [...]      (npm ci first; see package.json)
//
// For each dashboard it writes .generated/<name>.ts declaring
//   - the dashboard without panels, templating and annotations, as Dashboard;
//   - every panel (rows, and panels inside rows, included) as its own const:
//     Panel typed with the panel plugin's own Options/FieldConfig from
//     @grafana/schema's composable panelcfg types when there are some (so a
//     wrong legend.displayMode is caught, not just a wrong gridPos), else
//     Panel; rows as RowPanel;
//   - every template variable and every annotation as its own const;
// then runs `tsc --noEmit --strict` once over all of them and exits 1 on any
// error, naming the dashboard and panel. One const per object matters: tsc
// reports only the first excess-property error of an object literal.
//
// Allowances (what Grafana writes or JSON cannot say, kept minimal):
//   1. Json<T>: where the schema declares a TypeScript *string enum*
//      (FieldColorModeId, ThresholdsMode, MappingType, ...) the JSON string of
//      one of its members is accepted; JSON cannot hold an enum reference.
//      Numeric enums (VariableRefresh, VariableHide, VariableSort,
//      DashboardCursorSync) are left as they are: a JSON number must be a member.
//   2. Query variables may carry `definition` (the query text Grafana's editor
//      writes next to `query`); the schema's VariableModel has no such field.
//   3. SQL annotation and panel targets are typed as SqlTarget (refId, rawSql,
//      format, rawQuery, editorMode, datasource, hide) — the schema's
//      AnnotationQuery.target is a bare DataQuery and rejects rawSql/format,
//      Panel.targets accepts anything; SqlTarget is stricter for panels.
//      Targets of panels on a Prometheus datasource are typed as PromTarget:
//      @grafana/schema 12 no longer ships the Prometheus query type, so
//      PromTarget restates Grafana's PrometheusDataQuery kind (expr,
//      legendFormat, instant, range, exemplar, format, interval,
//      intervalFactor, editorMode, plus DataQuery's refId/datasource/hide).
// Nothing else is relaxed: no `any`, no casts.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, '.generated');
const tsc = path.join(here, 'node_modules', '.bin', 'tsc');

const PANEL_CFG = {
  annotationslist: 'AnnotationsListPanelCfg',
  barchart: 'BarChartPanelCfg',
  bargauge: 'BarGaugePanelCfg',
  candlestick: 'CandlestickPanelCfg',
  dashboardlist: 'DashboardListPanelCfg',
  gauge: 'GaugePanelCfg',
  heatmap: 'HeatmapPanelCfg',
  histogram: 'HistogramPanelCfg',
  logs: 'LogsPanelCfg',
  news: 'NewsPanelCfg',
  nodeGraph: 'NodeGraphPanelCfg',
  piechart: 'PieChartPanelCfg',
  stat: 'StatPanelCfg',
  'state-timeline': 'StateTimelinePanelCfg',
  'status-history': 'StatusHistoryPanelCfg',
  table: 'TablePanelCfg',
  text: 'TextPanelCfg',
  timeseries: 'TimeSeriesPanelCfg',
  trend: 'TrendPanelCfg',
};
const PANEL_DIR = { nodeGraph: 'nodegraph', 'state-timeline': 'statetimeline', 'status-history': 'statushistory' };

function panelCfgPath(type) {
  const dir = PANEL_DIR[type] ?? type;
  const file = path.join(here, 'node_modules/@grafana/schema/dist/types/raw/composable', dir, 'panelcfg/x', `${PANEL_CFG[type]}_types.gen.d.ts`);
  return fs.existsSync(file) ? file : null;
}

function hasExport(file, name) {
  return new RegExp(`export (interface|type|declare enum) ${name}\\b`).test(fs.readFileSync(file, 'utf8'));
}

function header(panelTypes) {
  const lines = [
    "import type { Dashboard, Panel, RowPanel, VariableModel, AnnotationQuery, DataSourceRef, FieldConfigSource } from '@grafana/schema';",
  ];
  const typed = {};
  for (const type of panelTypes) {
    if (!PANEL_CFG[type]) continue;
    const file = panelCfgPath(type);
    if (!file) continue;
    const alias = `cfg_${type.replace(/[^a-zA-Z0-9]/g, '_')}`;
    const spec = `@grafana/schema/dist/types/raw/composable/${PANEL_DIR[type] ?? type}/panelcfg/x/${PANEL_CFG[type]}_types.gen.js`;
    lines.push(`import type * as ${alias} from '${spec}';`);
    typed[type] = {
      options: hasExport(file, 'Options') ? `${alias}.Options` : 'Record<string, unknown>',
      field: hasExport(file, 'FieldConfig') ? `${alias}.FieldConfig` : 'Record<string, unknown>',
    };
  }
  lines.push(`
// Allowance 1: a JSON string where the schema has a string enum.
type Json<T> = T extends string
  ? string extends T ? string : \`\${T}\`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// Allowance 3: SQL query targets (grafana-postgresql-datasource).
type SqlTarget = {
  refId: string;
  datasource?: Json<DataSourceRef>;
  rawSql: string;
  format: 'time_series' | 'table';
  rawQuery?: boolean;
  editorMode?: 'code' | 'builder';
  hide?: boolean;
};

// Allowance 3 (Prometheus): Grafana's PrometheusDataQuery kind.
type PromTarget = {
  refId: string;
  datasource?: Json<DataSourceRef>;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  exemplar?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  intervalFactor?: number;
  editorMode?: 'code' | 'builder';
  hide?: boolean;
};

type TypedPanel<O, F, T = SqlTarget> = Json<Omit<Panel<O, F>, 'options' | 'fieldConfig' | 'targets'>> & {
  options?: Json<O>;
  fieldConfig?: Json<FieldConfigSource<F>>;
  targets?: T[];
};
type AnyPanel<T = SqlTarget> = Json<Omit<Panel, 'targets'>> & { targets?: T[] };
type Row = Json<Omit<RowPanel, 'panels'>> & { panels: unknown[] };
// Allowance 2: query variables' \`definition\`.
type Variable = Json<VariableModel> & { definition?: string };
type Annotation = Json<Omit<AnnotationQuery, 'target'>> & { target?: SqlTarget };
type Dash = Json<Omit<Dashboard, 'panels' | 'templating' | 'annotations'>>;
`);
  return { text: lines.join('\n'), typed };
}

function collectPanels(panels, out = []) {
  for (const p of panels ?? []) {
    out.push(p);
    if (p.type === 'row') collectPanels(p.panels, out);
  }
  return out;
}

// Prometheus panels: PromTarget; every other panel: SqlTarget.
function targetType(p) {
  return p.datasource?.type === 'prometheus' ? 'PromTarget' : 'SqlTarget';
}

function literal(v) {
  return JSON.stringify(v, null, 2);
}

function generate(file, index) {
  const dash = JSON.parse(fs.readFileSync(file, 'utf8'));
  const panels = collectPanels(dash.panels);
  const types = [...new Set(panels.map((p) => p.type))];
  const { text, typed } = header(types);
  const parts = [text];
  const where = []; // [startLine, endLine, label]
  let line = text.split('\n').length + 1;
  const add = (label, decl) => {
    const n = decl.split('\n').length;
    where.push([line, line + n - 1, label]);
    parts.push(decl);
    line += n;
  };
  const { panels: _p, templating, annotations, ...rest } = dash;
  add('dashboard', `export const dashboard: Dash = ${literal(rest)};`);
  panels.forEach((p, i) => {
    const label = `panel ${JSON.stringify(p.title ?? '')} (id ${p.id}, ${p.type})`;
    if (p.type === 'row') {
      add(label, `export const panel_${i}: Row = ${literal(p)};`);
      // rows' nested panels are checked as panels of their own (above/below)
    } else if (typed[p.type]) {
      add(label, `export const panel_${i}: TypedPanel<${typed[p.type].options}, ${typed[p.type].field}, ${targetType(p)}> = ${literal(p)};`);
    } else {
      add(label, `export const panel_${i}: AnyPanel<${targetType(p)}> = ${literal(p)};`);
    }
  });
  (templating?.list ?? []).forEach((v, i) => add(`variable $${v.name}`, `export const variable_${i}: Variable = ${literal(v)};`));
  (annotations?.list ?? []).forEach((a, i) => add(`annotation ${JSON.stringify(a.name)}`, `export const annotation_${i}: Annotation = ${literal(a)};`));
  const out = path.join(outDir, `d${index}_${path.basename(file).replace(/[^a-zA-Z0-9]/g, '_')}.ts`);
  fs.writeFileSync(out, parts.join('\n') + '\n');
  return { out, file, where };
}

function main(args) {
  if (args.length === 0) {
    console.error('usage: node check.mjs DASHBOARD.json [...]');
    return 2;
  }
  if (!fs.existsSync(tsc)) {
    console.error(`no ${tsc}: run npm ci in ${here}`);
    return 2;
  }
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const gens = [];
  let failed = 0;
  args.forEach((f, i) => {
    try {
      gens.push(generate(f, i));
    } catch (e) {
      console.log(`FAIL ${f}: ${e.message}`);
      failed++;
    }
  });
  const r = spawnSync(
    tsc,
    ['--noEmit', '--strict', '--target', 'es2022', '--module', 'esnext', '--moduleResolution', 'bundler', '--skipLibCheck', '--pretty', 'false', ...gens.map((g) => g.out)],
    { cwd: here, encoding: 'utf8' },
  );
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const errors = new Map(gens.map((g) => [g.out, []]));
  const other = [];
  for (const l of output.split('\n')) {
    const m = /^(.*?)\((\d+),(\d+)\): (error .*)$/.exec(l);
    if (!m) {
      if (l.trim() && !l.startsWith(' ')) other.push(l);
      else if (l.trim() && other.length === 0) {
        const last = [...errors.values()].flat().at(-1);
        if (last) last.msg += `\n      ${l.trim()}`;
      }
      continue;
    }
    const abs = path.resolve(here, m[1]);
    const g = gens.find((x) => x.out === abs);
    if (!g) {
      other.push(l);
      continue;
    }
    const ln = Number(m[2]);
    const w = g.where.find(([a, b]) => ln >= a && ln <= b);
    errors.get(g.out).push({ where: w ? w[2] : 'type header', line: ln, msg: m[4] });
  }
  for (const g of gens) {
    const errs = errors.get(g.out);
    if (errs.length === 0) {
      console.log(`ok   ${g.file} (${g.where.length} declarations)`);
    } else {
      failed++;
      console.log(`FAIL ${g.file}: ${errs.length} error(s)`);
      for (const e of errs) console.log(`  ${e.where}: ${e.msg}  [${path.relative(process.cwd(), g.out)}:${e.line}]`);
    }
  }
  if (other.length) {
    failed++;
    console.log(other.join('\n'));
  }
  if (r.status !== 0 && failed === 0) {
    console.log(`tsc exited ${r.status}:\n${output}`);
    failed++;
  }
  return failed ? 1 : 0;
}

process.exit(main(process.argv.slice(2)));
