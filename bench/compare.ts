/**
 * `node --import tsx bench/compare.ts [run.json] [reference.json] [--factor 1.5]`
 *
 * Compares the figures of a bench run (default `bench/results/latest.json`)
 * with those of a reference run of the same kind (default
 * `bench/results/reference.json` for a full run,
 * `bench/results/reference-quick.json` for a `--quick` one: quick runs move
 * less data, so some figures differ by design),
 * row by row where both measured the same case, backend and parameters, and
 * lists every figure worse than the reference by more than `factor`: a
 * throughput below reference / factor, or a time, size or request count above
 * reference × factor. Exits 1 when one is, so a regression can be re-run
 * before it is called one (runs on one machine differ by up to 1.7×).
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

interface Row {
  case: string;
  backend: string;
  params: string;
  value: number | null;
  unit: string;
}

/** Units where a smaller figure is better; every other unit is a rate. */
const LOWER_IS_BETTER = /^(ms\b|MiB|bytes|requests)/;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { factor: { type: 'string', default: '1.5' } },
});
const factor = Number(values.factor);
if (!(factor >= 1))
  throw new Error(`--factor must be a number of at least 1, got ${values.factor}`);
const [runPath = 'bench/results/latest.json', referenceArg] = positionals;

async function load(path: string): Promise<{ quick: boolean; rows: Map<string, Row> }> {
  const parsed = JSON.parse(await readFile(path, 'utf8')) as { quick?: boolean; rows: Row[] };
  return {
    quick: parsed.quick === true,
    rows: new Map(parsed.rows.map((r) => [`${r.case} | ${r.backend} | ${r.params}`, r])),
  };
}

const loaded = await load(runPath);
const referencePath =
  referenceArg ??
  (loaded.quick ? 'bench/results/reference-quick.json' : 'bench/results/reference.json');
const ref = await load(referencePath);
if (ref.quick !== loaded.quick) {
  console.log(
    `note: comparing a ${loaded.quick ? 'quick' : 'full'} run with a ${ref.quick ? 'quick' : 'full'} reference: open-loop and per-GB figures depend on the volume moved`,
  );
}
const run = loaded.rows;
const reference = ref.rows;
let compared = 0;
const worse: string[] = [];
for (const [key, r] of run) {
  const ref = reference.get(key);
  if (!ref || r.value === null || ref.value === null || ref.value <= 0 || r.unit !== ref.unit) {
    continue;
  }
  compared++;
  const lower = LOWER_IS_BETTER.test(r.unit);
  // How many times worse than the reference (below 1: better).
  const times = lower ? r.value / ref.value : ref.value / Math.max(r.value, Number.MIN_VALUE);
  if (times > factor) {
    worse.push(`${key}: ${r.value} ${r.unit} against ${ref.value} (${times.toFixed(2)}× worse)`);
  }
}
console.log(
  `${compared} figures compared (${runPath} against ${referencePath}); ${worse.length} worse than ${factor}×`,
);
for (const w of worse) console.log(`  ${w}`);
process.exitCode = worse.length > 0 ? 1 : 0;
