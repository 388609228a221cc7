// Prints the raw and gzipped size of snippet/ct.js; exits 1 above the budget.
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

export const LIMIT = 4096;
export const FILE = fileURLToPath(new URL('../../snippet/ct.js', import.meta.url));

export function sizes(file = FILE) {
  const buf = readFileSync(file);
  return { raw: buf.length, gzip: gzipSync(buf).length };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { raw, gzip } = sizes();
  console.log(`snippet/ct.js: ${raw} bytes raw, ${gzip} bytes gzipped (budget ${LIMIT})`);
  if (gzip > LIMIT) {
    console.error(`snippet/ct.js is ${gzip - LIMIT} bytes over the ${LIMIT}-byte gzip budget`);
    process.exit(1);
  }
}
