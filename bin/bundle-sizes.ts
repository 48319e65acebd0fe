import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

/**
 * Prints each Lambda bundle in cdk.out: its size, gzipped size, and the heaviest packages in it (from
 * esbuild's metafile). Fails when the intake bundle carries a database driver. Run after `cdk synth`.
 */
export interface BundleReport {
  readonly name: string;
  /** The bundle's index.mjs. */
  readonly file: string;
  readonly bytes: number;
  readonly gzipBytes: number;
  readonly packages: Array<[string, number]>;
}

const DATABASE_DRIVERS = ['pg', 'pg-protocol', 'kysely', 'postgres'];

export function bundleReports(outdir = 'cdk.out'): BundleReport[] {
  const reports: BundleReport[] = [];
  for (const file of readdirSync(outdir).filter((f) => f.endsWith('.template.json'))) {
    const template = JSON.parse(readFileSync(path.join(outdir, file), 'utf8'));
    type Resource = { Type: string; Properties?: { Code?: { S3Key?: unknown } } };
    for (const [logicalId, resource] of Object.entries<Resource>(template.Resources)) {
      const key = resource.Properties?.Code?.S3Key;
      if (resource.Type !== 'AWS::Lambda::Function' || typeof key !== 'string') continue;
      const assetPath = `asset.${key.replace(/\.zip$/, '')}`;
      const bundle = path.join(outdir, assetPath, 'index.mjs');
      const metafile = path.join(outdir, assetPath, 'index.meta.json');
      try {
        statSync(metafile);
      } catch {
        continue; // not one of ours (e.g. a CDK provider function)
      }
      const meta = JSON.parse(readFileSync(metafile, 'utf8'));
      const sizes = new Map<string, number>();
      for (const output of Object.values<{ inputs: Record<string, { bytesInOutput: number }> }>(
        meta.outputs,
      )) {
        for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
          const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(
            input.split('node_modules/').length > 2 ? input.slice(input.lastIndexOf('node_modules/')) : input,
          );
          const name = match?.[1] ?? '(project)';
          sizes.set(name, (sizes.get(name) ?? 0) + bytesInOutput);
        }
      }
      const content = readFileSync(bundle);
      reports.push({
        name: logicalId.replace(/[0-9A-F]{8}$/, ''),
        file: bundle,
        bytes: content.length,
        gzipBytes: gzipSync(content).length,
        packages: [...sizes].sort((a, b) => b[1] - a[1]),
      });
    }
  }
  return reports;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
  console.log('function'.padEnd(16), 'bundle'.padStart(10), 'gzip'.padStart(10), '  largest packages');
  let failed = false;
  // Where bin/app.ts synthesized: it honours CDK_OUTDIR too.
  for (const report of bundleReports(process.env.CDK_OUTDIR ?? 'cdk.out')) {
    const top = report.packages
      .slice(0, 4)
      .map(([name, bytes]) => `${name} ${kb(bytes)}`)
      .join(', ');
    console.log(
      report.name.padEnd(16),
      kb(report.bytes).padStart(10),
      kb(report.gzipBytes).padStart(10),
      ' ',
      top,
    );
    const drivers = report.packages.filter(([name]) => DATABASE_DRIVERS.includes(name));
    if (report.name.startsWith('WebhookIntake') && drivers.length > 0) {
      console.error(`the intake bundle carries a database driver: ${drivers.map(([n]) => n).join(', ')}`);
      failed = true;
    }
  }
  process.exitCode = failed ? 1 : 0;
}
