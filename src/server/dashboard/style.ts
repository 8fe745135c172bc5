/** The dashboard's stylesheet: a grid of cards that folds to one column on a phone, light or dark. */
export const DASHBOARD_CSS = `:root {
  --bg: #f6f7f9; --card: #fff; --text: #1d2330; --muted: #5f6b7a; --line: #e3e6eb;
  --accent: #2563eb;
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #12151b; --card: #1b2029; --text: #e6e9ef; --muted: #9aa5b4; --line: #2c3340; --accent: #60a5fa; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; align-items: center; gap: 1rem; padding: .75rem 1rem; border-bottom: 1px solid var(--line); background: var(--card); position: sticky; top: 0; z-index: 1; }
h1 { font-size: 1.2rem; margin: 0; }
h2 { font-size: .95rem; margin: 0 0 .25rem; }
.status { font-size: .8rem; color: var(--muted); }
.status[data-state="live"]::before { content: "● "; color: #16a34a; }
.status[data-state="error"] { color: #dc2626; }
main { padding: 1rem; max-width: 1400px; margin: 0 auto; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(135px, 1fr)); gap: .75rem; margin-bottom: 1rem; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6rem .8rem; display: flex; flex-direction: column; }
.tile .label { color: var(--muted); font-size: .75rem; text-transform: uppercase; letter-spacing: .03em; }
.tile .value { font-size: 1.4rem; font-variant-numeric: tabular-nums; white-space: nowrap; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: .75rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75rem; margin-bottom: .75rem; min-width: 0; }
.grid .card { margin-bottom: 0; }
.note { color: var(--muted); font-size: .75rem; margin: 0 0 .4rem; }
canvas { display: block; width: 100%; height: 170px; }
.legend { list-style: none; margin: .3rem 0 0; padding: 0; display: flex; flex-wrap: wrap; gap: .2rem .8rem; font-size: .75rem; color: var(--muted); }
.legend .swatch { display: inline-block; width: .7rem; height: .7rem; border-radius: 2px; margin-right: .3rem; vertical-align: -1px; }
.legend b { color: var(--text); font-weight: 600; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .8rem; margin-bottom: .75rem; }
th, td { text-align: right; padding: .3rem .5rem; border-bottom: 1px solid var(--line); white-space: nowrap; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
th { color: var(--muted); font-weight: 500; }
footer { text-align: center; padding: 1rem; font-size: .8rem; color: var(--muted); }
a { color: var(--accent); }
@media (max-width: 600px) {
  main { padding: .5rem; }
  .grid { grid-template-columns: 1fr; }
  .tiles { grid-template-columns: repeat(2, 1fr); gap: .5rem; }
  .tile .value { font-size: 1.15rem; }
  canvas { height: 150px; }
}
`;
