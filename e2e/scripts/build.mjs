// Builds snippet/ct.js (the file the server embeds and serves at /t/ct.js) from
// snippet/ct.src.js by dropping comment lines and indentation. No dependencies.
// Usage: node scripts/build.mjs          write snippet/ct.js
//        node scripts/build.mjs --check  exit 1 if snippet/ct.js is stale
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sizes, LIMIT } from './size.mjs';

export const SRC = fileURLToPath(new URL('../../snippet/ct.src.js', import.meta.url));
export const OUT = fileURLToPath(new URL('../../snippet/ct.js', import.meta.url));

// The source keeps comments on their own lines only (see its header), so a
// line-based pass is exact: keep the /*! banner, drop // and /* */ lines.
export function build(src) {
  const out = [];
  let inBlock = false;
  for (const raw of src.split('\n')) {
    const line = raw.trim();
    if (inBlock) {
      if (line.includes('*/')) inBlock = false;
      continue;
    }
    if (line.startsWith('/*!')) { out.push(line); continue; }
    if (line.startsWith('/*')) {
      if (!line.includes('*/')) inBlock = true;
      continue;
    }
    if (line === '' || line.startsWith('//')) continue;
    out.push(line);
  }
  return out.join('\n') + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const built = build(readFileSync(SRC, 'utf8'));
  if (process.argv.includes('--check')) {
    if (readFileSync(OUT, 'utf8') !== built) {
      console.error('snippet/ct.js is stale: run `npm run build` in e2e/ and commit it');
      process.exit(1);
    }
    console.log('snippet/ct.js is up to date');
  } else {
    writeFileSync(OUT, built);
    const { raw, gzip } = sizes(OUT);
    console.log(`wrote snippet/ct.js: ${raw} bytes raw, ${gzip} bytes gzipped (budget ${LIMIT})`);
    if (gzip > LIMIT) process.exit(1);
  }
}
