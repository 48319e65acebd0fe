import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { bundleReports } from '../../bin/bundle-sizes.js';
import { type BenchContext, fmt } from './harness.js';

/** Median ms of `import(file)` in a fresh Node process, over `runs` processes. */
function coldImportMs(file: string, runs: number): number {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const run = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const t = performance.now(); await import(${JSON.stringify(file)}); console.log(performance.now() - t);`,
      ],
      { encoding: 'utf8', env: { ...process.env, AWS_REGION: 'us-east-1' } },
    );
    if (run.status !== 0) throw new Error(`importing ${file} failed: ${run.stderr}`);
    samples.push(Number(run.stdout.trim()));
  }
  return samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
}

/** Each Lambda bundle of this code (synthesized now): its size and cold import, against an empty module. */
export async function benchBundles({ scale, report }: BenchContext): Promise<void> {
  console.error('bundles: synthesizing, then sizes and cold import times');
  await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bin/app.ts']);
  const emptyDir = mkdtempSync(path.join(tmpdir(), 'credits-empty-'));
  let baseline: number;
  try {
    writeFileSync(path.join(emptyDir, 'empty.mjs'), 'export {};\n');
    baseline = coldImportMs(path.join(emptyDir, 'empty.mjs'), scale.imports);
  } finally {
    rmSync(emptyDir, { recursive: true, force: true });
  }
  for (const bundle of bundleReports()) {
    const ms = coldImportMs(path.resolve(bundle.file), scale.imports);
    const intake = bundle.name.startsWith('WebhookIntake');
    report({
      name: `bundle ${bundle.name}`,
      ours: `${fmt(bundle.bytes / 1024, 1)} KB (gzip ${fmt(bundle.gzipBytes / 1024, 1)} KB), cold import ${ms.toFixed(1)} ms`,
      baseline: `empty module import ${baseline.toFixed(1)} ms`,
      ratio: null,
      ...(intake && { target: 'bundle < 250 KB', met: bundle.bytes < 250 * 1024 }),
      figures: {
        bytes: bundle.bytes,
        gzipBytes: bundle.gzipBytes,
        coldImportMs: ms,
        emptyImportMs: baseline,
      },
    });
  }
}
