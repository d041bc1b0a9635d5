// veritrace consumer page: checks the trace bundle in this browser (docs/consumer.md).
//
// Trusts only the ledger id and the validator keys the page carries from the ledger's
// genesis file, never the node's answers: it fetches the bundle the page was made from
// and checks it the way `veritrace_ledger::bundle::verify_bundle` does (docs/proofs.md):
//
//   1. the checkpoint: signatures of validators of the genesis over the header's hash,
//      from a quorum (more than half) of distinct organisations;
//   2. every organisation of the bundle against the checkpoint's state root;
//   3. every record: its author's key (valid at the record's time), its ed25519 signature
//      over the record's canonical bytes, and its inclusion in the checkpoint's log;
//   4. every subject: its state against the state root, and its hash chain recomputed
//      from the records (so none was left out, added, altered or reordered);
//   5. no record outside the subjects' chains; 6. the bundle is about the page's code.
//
// Then it checks that every value the page shows in an element marked `data-vt` is what
// the verified bundle says, and that no record of the bundle is left off the page. The
// same rules are in node/src/consumer.rs (`RecordView::facts`, `ConsumerView::page_facts`).
//
// Canonical bytes are re-encoded here from the bundle's JSON: version byte 1, then bincode
// with big-endian fixed-width integers (u64 lengths, u32 enum variants, 0/1 option tags,
// raw 32- and 64-byte hashes, keys and signatures). Numbers are read exactly (as BigInt).

import { blake3 } from './vendor/noble-hashes/blake3.js';
import { sha512 } from './vendor/noble-hashes/sha2.js';
import * as ed from './vendor/noble-ed25519/index.js';

// Synchronous SHA-512 for ed25519: WebCrypto exists only on https pages.
ed.hashes.sha512 = sha512;

const CODEC_VERSION = 1;
const BUNDLE_FORMAT = 1n;
const U64_MAX = (1n << 64n) - 1n;
const utf8 = new TextEncoder();

const ROLES = ['regulator', 'inspection_body', 'producer', 'platform', 'logistics'];
const REGULATORY = ['clear', 'held', 'recalled'];
const VERDICTS = ['pass', 'fail'];
const ACTIONS = ['hold', 'release', 'recall', 'customs_clearance'];
const CODE_SETS = ['range', 'serials', 'codes'];
const BODIES = ['issue_codes', 'certify_conformity', 'inspection', 'ship', 'receive', 'aggregate',
  'disaggregate', 'sell', 'regulatory', 'governance'];

/** A check that failed; its message says what, as verify_bundle's errors do. */
class Failed extends Error {}
const fail = (message) => { throw new Failed(message); };

// ---- bytes and hashes ----------------------------------------------------------------

const ZERO32 = new Uint8Array(32);

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

function fromHex(s, len, what) {
  if (typeof s !== 'string' || s.length !== 2 * len || !/^[0-9a-f]*$/.test(s)) {
    fail(`${what}: expected ${len} bytes of lower-case hex`);
  }
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function u64be(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

/** blake3 in derive-key mode with a context string, as the ledger's domain hashes. */
const deriveKey = (context, bytes) => blake3(bytes, { context: utf8.encode(context) });
const merkleLeaf = (id) => blake3(concat(Uint8Array.of(0x00), id));
const merkleNode = (l, r) => blake3(concat(Uint8Array.of(0x01), l, r));
const smtLeaf = (k, v) => blake3(concat(Uint8Array.of(0x10), k, v));
const smtNode = (l, r) => blake3(concat(Uint8Array.of(0x11), l, r));
const chainLink = (prev, id) =>
  deriveKey('veritrace/v1/subject-chain', concat(u64be(32), prev, u64be(32), id));

// ---- canonical bytes -------------------------------------------------------------------

/** Writes canonical bytes; every method checks the JSON value it is given. */
class Canon {
  constructor() { this.parts = [Uint8Array.of(CODEC_VERSION)]; }
  raw(b) { this.parts.push(b); }
  u8(n) {
    const v = Number(n);
    if (!Number.isInteger(v) || v < 0 || v > 255) fail(`${n} is not a u8`);
    this.raw(Uint8Array.of(v));
  }
  u32(n) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n);
    this.raw(b);
  }
  u64(n) {
    if (typeof n !== 'bigint' || n < 0n || n > U64_MAX) fail(`${n} is not a u64`);
    this.raw(u64be(n));
  }
  bool(v) {
    if (typeof v !== 'boolean') fail(`${v} is not a boolean`);
    this.u8(v ? 1 : 0);
  }
  str(s) {
    if (typeof s !== 'string') fail(`${JSON.stringify(String(s))} is not a string`);
    const b = utf8.encode(s);
    this.u64(BigInt(b.length));
    this.raw(b);
  }
  opt(v, f) {
    if (v === undefined) fail('a field is missing');
    if (v === null) { this.u8(0); } else { this.u8(1); f(v); }
  }
  seq(a, f) {
    if (!Array.isArray(a)) fail('a list is not a list');
    this.u64(BigInt(a.length));
    a.forEach((x) => f(x));
  }
  hash(s, what) { this.raw(fromHex(s, 32, what)); }
  sig(s, what) { this.raw(fromHex(s, 64, what)); }
  unit(v, names, what) { this.u32(variant(v, names, what)); }
  bytes() { return concat(...this.parts); }
}

function variant(v, names, what) {
  const i = names.indexOf(v);
  if (i < 0) fail(`${what}: unknown value ${JSON.stringify(v)}`);
  return i;
}

/** An externally tagged enum value `{"name": content}`: [index, name, content]. */
function tagged(v, names, what) {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Object.keys(v).length !== 1) {
    fail(`${what}: not one tagged variant`);
  }
  const name = Object.keys(v)[0];
  return [variant(name, names, what), name, v[name]];
}

function header(c, h) {
  c.str(h.ledger_id); c.u64(h.height); c.hash(h.prev_hash, 'prev_hash'); c.u64(h.time_ms);
  c.str(h.proposer); c.hash(h.records_hash, 'records_hash'); c.hash(h.receipts_hash, 'receipts_hash');
  c.u64(h.log_size); c.hash(h.log_root, 'log_root'); c.hash(h.state_root, 'state_root');
}

function organisation(c, o) {
  c.str(o.id); c.str(o.name);
  c.seq(o.roles, (r) => c.unit(r, ROLES, 'role'));
  c.seq(o.keys, (k) => {
    c.str(k.key_id); c.hash(k.public_key, 'public key'); c.u64(k.valid_from_ms);
    c.opt(k.valid_until_ms, (v) => c.u64(v)); c.opt(k.revoked_at_ms, (v) => c.u64(v));
  });
  c.seq(o.code_prefixes, (p) => { c.str(p.scheme); c.str(p.prefix); });
  c.seq(o.inspection_scope, (s) => c.str(s));
}

function subjectState(c, s) {
  c.str(s.custodian); c.opt(s.in_transit_to, (v) => c.str(v)); c.bool(s.sold);
  c.unit(s.regulatory, REGULATORY, 'regulatory'); c.bool(s.customs_cleared);
  c.opt(s.lot, (v) => c.str(v)); c.opt(s.parent, (v) => c.str(v)); c.u64(s.units); c.str(s.origin);
  c.u64(s.record_count); c.hash(s.chain, 'chain'); c.bool(s.detached);
}

const strs = (c) => (v) => c.str(v);

/** The record's body kind (`issue_codes` ...), its content, and its RecordKind byte. */
function body(rec) {
  const [i, kind, b] = tagged(rec.body, BODIES, 'record body');
  return { i, kind, b, kindByte: i + 1 };
}

function record(c, rec) {
  c.str(rec.author); c.str(rec.key_id); c.u64(rec.time_ms); c.u64(rec.nonce);
  const { i, kind, b } = body(rec);
  c.u32(i);
  switch (kind) {
    case 'issue_codes': {
      const p = b.product;
      c.str(p.gtin); c.str(p.name); c.str(p.model); c.str(p.spec); c.str(p.standard);
      c.str(b.lot); c.str(b.production_date); c.opt(b.expiry_date, strs(c));
      const [ci, cname, set] = tagged(b.codes, CODE_SETS, 'codes');
      c.u32(ci);
      if (cname === 'range') { c.str(set.prefix); c.u64(set.start); c.u64(set.count); c.u8(set.width); }
      else c.seq(set, strs(c));
      c.str(b.factory);
      break;
    }
    case 'certify_conformity':
      c.str(b.gtin); c.str(b.lot); c.str(b.certificate_no); c.str(b.standard); c.str(b.statement);
      break;
    case 'inspection':
      c.seq(b.subjects, strs(c)); c.str(b.report_no); c.str(b.standard);
      c.unit(b.result, VERDICTS, 'result');
      c.seq(b.test_items, (t) => {
        c.str(t.name); c.str(t.requirement); c.str(t.measured); c.unit(t.verdict, VERDICTS, 'verdict');
      });
      c.hash(b.document_digest, 'document_digest'); c.opt(b.valid_until_ms, (v) => c.u64(v));
      break;
    case 'ship': c.str(b.to); c.seq(b.subjects, strs(c)); c.str(b.location); break;
    case 'receive': c.str(b.from); c.seq(b.subjects, strs(c)); c.str(b.location); break;
    case 'aggregate':
    case 'disaggregate': c.str(b.parent); c.seq(b.children, strs(c)); break;
    case 'sell': c.seq(b.subjects, strs(c)); c.str(b.channel); break;
    case 'regulatory':
      c.unit(b.action, ACTIONS, 'action'); c.seq(b.subjects, strs(c)); c.str(b.reason); c.str(b.reference);
      break;
    default:
      fail('a governance record is in a subject chain; this page does not check those');
  }
}

function signedRecord(c, sr) {
  const inner = new Canon();
  record(inner, sr.record);
  const recordBytes = inner.bytes();
  c.raw(recordBytes.subarray(1));
  c.sig(sr.signature, 'signature');
  c.seq(sr.approvals, (a) => { c.str(a.org); c.str(a.key_id); c.sig(a.signature, 'approval'); });
  return recordBytes;
}

/** The message a record's author signs (docs/ledger.md). */
function signingMessage(ledgerId, rec, recordBytes) {
  const ledger = utf8.encode(ledgerId);
  if (ledger.length > 255) fail('ledger id too long');
  return concat(utf8.encode('veritrace/v1/record-signature'), Uint8Array.of(0, ledger.length), ledger,
    Uint8Array.of(body(rec).kindByte), recordBytes);
}

function stateKey(variantIndex, id) {
  const c = new Canon();
  c.u32(variantIndex); c.str(id);
  return deriveKey('veritrace/v1/state-key', c.bytes());
}

function stateValue(variantIndex, write, value) {
  const c = new Canon();
  c.u32(variantIndex); write(c, value);
  return deriveKey('veritrace/v1/state-value', c.bytes());
}

// ---- proofs ----------------------------------------------------------------------------

/** RFC 9162 §2.1.3.2: the leaf at `index` of a log of `size` leaves hashes up to `root`. */
function verifyInclusion(leaf, index, size, path, root) {
  if (index >= size) fail(`index ${index} is not below the log size ${size}`);
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) fail('the path is too long');
    if ((fn & 1n) === 1n || fn === sn) {
      r = merkleNode(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = merkleNode(r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  if (sn !== 0n) fail('the path is too short');
  if (!equal(r, root)) fail(`computes root ${toHex(r)}, the checkpoint says ${toHex(root)}`);
}

const bit = (key, d) => (key[d >> 3] >> (7 - (d & 7))) & 1;

function sharedBits(a, b) {
  let n = 0;
  while (n < 256 && bit(a, n) === bit(b, n)) n++;
  return n;
}

/** The state map proof (docs/proofs.md): membership of (key, valueHash), or absence. */
function verifyState(root, key, valueHash, proof) {
  if (!proof || !Array.isArray(proof.siblings)) fail('no state proof');
  const siblings = proof.siblings.map((s) => fromHex(s, 32, 'sibling'));
  const depth = siblings.length;
  if (depth > 256) fail(`state proof of ${depth} siblings`);
  let end;
  if (proof.leaf === null) {
    if (valueHash) fail('state proof ends in an empty subtree, but the entry should be there');
    if (depth === 256) fail('state proof ends empty at full depth');
    end = ZERO32;
  } else {
    if (!Array.isArray(proof.leaf) || proof.leaf.length !== 2) fail('state proof leaf is malformed');
    const lk = fromHex(proof.leaf[0], 32, 'leaf key');
    const lv = fromHex(proof.leaf[1], 32, 'leaf value');
    if (valueHash) {
      if (!equal(lk, key)) fail('state proof ends in the leaf of another key');
      if (!equal(lv, valueHash)) fail('the state map holds another value for this entry');
    } else {
      if (equal(lk, key)) fail('the state map holds an entry the bundle says is absent');
      if (sharedBits(lk, key) < depth) fail('state proof ends in a leaf off the path');
    }
    end = smtLeaf(lk, lv);
  }
  if (depth > 0 && equal(siblings[depth - 1], ZERO32)) fail('state proof has an empty last sibling');
  let h = end;
  for (let d = depth - 1; d >= 0; d--) h = bit(key, d) ? smtNode(siblings[d], h) : smtNode(h, siblings[d]);
  if (!equal(h, root)) fail(`computes root ${toHex(h)}, the checkpoint says ${toHex(root)}`);
}

function verifySignature(sig, msg, key) {
  try {
    return ed.verify(sig, msg, key, { zip215: false });
  } catch {
    return false;
  }
}

// ---- codes -----------------------------------------------------------------------------

/** Percent-encoding of a Digital Link segment as the ledger writes it (RFC 3986 unreserved kept). */
function encodeComponent(s) {
  return Array.from(utf8.encode(s), (b) => {
    const c = String.fromCharCode(b);
    return /[A-Za-z0-9\-._~]/.test(c) ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }).join('');
}

const isLot = (code) => /^01\/\d{14}\/10\//.test(code);

function item(code) {
  const m = /^01\/(\d{14})\/21\/(.+)$/.exec(code);
  if (!m) return null;
  try { return { gtin: m[1], serial: decodeURIComponent(m[2]) }; } catch { return null; }
}

function rangeContains(r, serial) {
  if (!serial.startsWith(r.prefix)) return false;
  const digits = serial.slice(r.prefix.length);
  if (digits.length !== Number(r.width) || !/^[0-9]+$/.test(digits)) return false;
  const n = BigInt(digits);
  return n <= U64_MAX && n >= r.start && n - r.start < r.count;
}

/** Whether issuance `ic` made `code` (an item, of `lot` if given) or is the issuance of `code` (a lot). */
function issues(ic, code, lot) {
  const ownLot = `01/${ic.product.gtin}/10/${encodeComponent(ic.lot)}`;
  if (isLot(code)) return ownLot === code;
  const it = item(code);
  if (!it || (lot !== null && lot !== ownLot) || it.gtin !== ic.product.gtin) return false;
  const [, name, set] = tagged(ic.codes, CODE_SETS, 'codes');
  if (name === 'range') return rangeContains(set, it.serial);
  if (name === 'serials') return set.includes(it.serial);
  return false;
}

// ---- the bundle ------------------------------------------------------------------------

/** Checks `b` against the trusted genesis validators; returns what it established. */
function verifyBundle(b, trust) {
  if (b.format !== BUNDLE_FORMAT) fail(`bundle format ${b.format} is not supported`);
  const h = b.checkpoint.header;

  // 1. The checkpoint.
  if (h.ledger_id !== trust.ledger_id) {
    fail(`checkpoint: checkpoint is for ledger "${h.ledger_id}", expected "${trust.ledger_id}"`);
  }
  const hc = new Canon();
  header(hc, h);
  const headerHash = deriveKey('veritrace/v1/block-header', hc.bytes());
  const cpMsg = concat(utf8.encode('veritrace/v1/checkpoint-signature'), Uint8Array.of(0), headerHash);
  const signers = new Set();
  for (const s of b.checkpoint.signatures) {
    const v = trust.validators.find((v) => v.node_id === s.node_id);
    if (!v) continue;
    if (!verifySignature(fromHex(s.signature, 64, 'checkpoint signature'), cpMsg, fromHex(v.public_key, 32, 'validator key'))) {
      fail(`checkpoint: signature of node "${s.node_id}" does not verify against its validator key`);
    }
    signers.add(v.org);
  }
  const quorum = Math.floor(trust.validators.length / 2) + 1;
  if (signers.size < quorum) {
    fail(`checkpoint: only ${signers.size} validators of distinct organisations signed, quorum is ${quorum}`);
  }
  const stateRoot = fromHex(h.state_root, 32, 'state_root');
  const logRoot = fromHex(h.log_root, 32, 'log_root');

  // 2. Organisations.
  const orgs = new Map();
  for (const o of b.orgs) {
    try {
      verifyState(stateRoot, stateKey(1, o.org.id), stateValue(1, organisation, o.org), o.proof);
    } catch (e) {
      if (e instanceof Failed) fail(`organisation ${o.org.id}: state proof does not verify: ${e.message}`);
      throw e;
    }
    orgs.set(o.org.id, o.org);
  }

  // 3. Records.
  const byIndex = new Map();
  let prev = null;
  for (const r of b.records) {
    const at = (m) => fail(`record at log index ${r.log_index}: ${m}`);
    if (prev !== null && prev >= r.log_index) at('records are not in ascending log order');
    prev = r.log_index;
    const rec = r.record.record;
    const org = orgs.get(rec.author);
    if (!org) at(`author ${rec.author} is not in the bundle`);
    const key = org.keys.find((k) => k.key_id === rec.key_id);
    if (!key) at(`${rec.author} has no key ${rec.key_id}`);
    const t = rec.time_ms;
    const valid = t >= key.valid_from_ms && (key.valid_until_ms === null || t < key.valid_until_ms)
      && (key.revoked_at_ms === null || t < key.revoked_at_ms);
    if (!valid) at(`key ${rec.key_id} of ${rec.author} was not valid at ${t} ms`);
    let signed;
    let recordBytes;
    try {
      signed = new Canon();
      recordBytes = signedRecord(signed, r.record);
    } catch (e) {
      if (e instanceof Failed) at(e.message);
      throw e;
    }
    const msg = signingMessage(h.ledger_id, rec, recordBytes);
    if (!verifySignature(fromHex(r.record.signature, 64, 'signature'), msg, fromHex(key.public_key, 32, 'key'))) {
      at(`signature of ${rec.author} does not verify`);
    }
    const id = deriveKey('veritrace/v1/record-id', signed.bytes());
    try {
      verifyInclusion(merkleLeaf(id), r.log_index, h.log_size, r.inclusion.map((p) => fromHex(p, 32, 'path')), logRoot);
    } catch (e) {
      if (e instanceof Failed) at(`inclusion proof: ${e.message}`);
      throw e;
    }
    byIndex.set(String(r.log_index), { id, r });
  }

  // 4. Subjects and their chains; 5. every record in a chain.
  const referenced = new Set();
  for (const s of b.subjects) {
    const at = (m) => fail(`subject ${s.subject}: ${m}`);
    const vh = s.state === null ? null : stateValue(0, subjectState, s.state);
    try {
      verifyState(stateRoot, stateKey(0, s.subject), vh, s.proof);
    } catch (e) {
      if (e instanceof Failed) at(`state proof: ${e.message}`);
      throw e;
    }
    let chain = ZERO32;
    for (const i of s.chain) {
      const e = byIndex.get(String(i));
      if (!e) at(`chain names log index ${i}, which the bundle lacks`);
      chain = chainLink(chain, e.id);
      referenced.add(String(i));
    }
    const wantCount = s.state === null ? 0n : s.state.record_count;
    const wantChain = s.state === null ? ZERO32 : fromHex(s.state.chain, 32, 'chain');
    if (BigInt(s.chain.length) !== wantCount) at(`${s.chain.length} records given, the ledger counts ${wantCount}`);
    if (!equal(chain, wantChain)) {
      at('the records do not recompute the chain: a record is missing, extra, altered or out of order');
    }
  }
  for (const i of byIndex.keys()) if (!referenced.has(i)) fail(`record at log index ${i} is in no subject's chain`);

  // 6. Coverage: the bundle is about its code.
  const cov = (m) => fail(`the bundle does not cover code ${b.code}: ${m}`);
  const first = b.subjects[0];
  if (!first) cov('no subjects');
  if (first.subject !== b.code) cov(`first subject is ${first.subject}`);
  let lotId = null;
  if (first.state !== null) {
    lotId = first.state.lot;
  } else if (isLot(b.code)) {
    cov('the lot is not on the ledger');
  } else {
    if (!b.subjects[1]) cov('the code has no entry and no lot is given');
    lotId = b.subjects[1].subject;
  }
  if (lotId !== null) {
    const lot = b.subjects.find((s) => s.subject === lotId);
    if (!lot) cov(`its lot ${lotId} is not in the bundle`);
    const covered = lot.chain.some((i) => {
      const rec = byIndex.get(String(i)).r.record.record;
      const { kind, b: ic } = body(rec);
      return kind === 'issue_codes' && issues(ic, b.code, null);
    });
    if (!covered) cov(`no issuance in lot ${lotId}'s chain covers it`);
  }

  return {
    height: h.height,
    signers: [...signers].sort(),
    validators: trust.validators.length,
    records: b.records.length,
    orgs,
  };
}

// ---- what the page shows ---------------------------------------------------------------

function utc(ms) {
  const s = new Date(Number(ms)).toISOString();
  return `${s.slice(0, 10)} ${s.slice(11, 16)} UTC`;
}

const WHAT = {
  issue_codes: 'Codes issued', certify_conformity: 'Certificate of conformity', inspection: 'Inspection report',
  ship: 'Shipped', receive: 'Received', aggregate: 'Packed', disaggregate: 'Unpacked', sell: 'Sold',
};
const ACTION_WHAT = {
  hold: 'Held by a regulator', release: 'Released by a regulator', recall: 'Recalled',
  customs_clearance: 'Customs clearance',
};

function facts() {
  const f = new Map();
  const add = (k, v) => { if (v !== null && v !== undefined && String(v) !== '') f.set(k, String(v)); };
  return [f, add];
}

/** The values a record's row shows, by `data-vt` key (RecordView::facts). */
function recordFacts(rec, orgName) {
  const { kind, b } = body(rec);
  const [f, add] = facts();
  add('what', kind === 'regulatory' ? ACTION_WHAT[b.action] : WHAT[kind]);
  add('time', utc(rec.time_ms));
  add('by', orgName(rec.author));
  switch (kind) {
    case 'issue_codes': {
      const [, name, set] = tagged(b.codes, CODE_SETS, 'codes');
      add('count', name === 'range' ? set.count : set.length);
      add('factory', b.factory);
      break;
    }
    case 'certify_conformity':
      add('certificate_no', b.certificate_no); add('standard', b.standard); add('statement', b.statement);
      break;
    case 'inspection':
      add('result', b.result.toUpperCase()); add('report_no', b.report_no); add('standard', b.standard);
      add('subjects', b.subjects.join(', '));
      add('valid_until', b.valid_until_ms === null ? '' : utc(b.valid_until_ms));
      add('document', b.document_digest);
      b.test_items.forEach((t, i) => {
        add(`test.${i}.name`, t.name); add(`test.${i}.requirement`, t.requirement);
        add(`test.${i}.measured`, t.measured); add(`test.${i}.verdict`, t.verdict.toUpperCase());
      });
      break;
    case 'ship': add('to', orgName(b.to)); add('location', b.location); break;
    case 'receive': add('from', orgName(b.from)); add('location', b.location); break;
    case 'aggregate':
    case 'disaggregate': add('unit', `00/${b.parent}`); add('count', b.children.length); break;
    case 'sell': add('channel', b.channel); break;
    case 'regulatory': add('reason', b.reason); add('reference', b.reference); break;
    default: break;
  }
  return f;
}

function statusOf(s) {
  if (s.regulatory === 'recalled') return 'recalled';
  if (s.regulatory === 'held') return 'held';
  if (s.sold) return 'sold';
  if (s.in_transit_to !== null) return 'in_transit';
  return 'active';
}

/** What a consumer should be told (query::effective_status). */
function effectiveStatus(subjects) {
  const worst = Math.max(-1, ...subjects.filter((s) => s.state).map((s) => REGULATORY.indexOf(s.state.regulatory)));
  if (worst === 2) return 'recalled';
  if (worst === 1) return 'held';
  const first = subjects[0] && subjects[0].state;
  const own = first && first.detached ? first : null;
  const lotOrUnit = subjects.slice(1).find((s) => s.state);
  const s = own || (lotOrUnit && lotOrUnit.state) || first;
  return s ? statusOf(s) : 'active';
}

/** The values the page shows outside records (ConsumerView::page_facts and the rest). */
function pageFacts(b, orgName) {
  const [f, add] = facts();
  add('code', b.code);
  add('status', effectiveStatus(b.subjects));
  add('checkpoint.height', b.checkpoint.header.height);
  const lotSubject = b.subjects.slice(1).find((s) => isLot(s.subject));
  const lot = lotSubject ? lotSubject.subject : null;
  for (const r of b.records) {
    const rec = r.record.record;
    const { kind, b: ic } = body(rec);
    if (kind !== 'issue_codes' || !issues(ic, b.code, lot)) continue;
    add('product.name', ic.product.name); add('product.gtin', ic.product.gtin); add('product.lot', ic.lot);
    add('product.model', ic.product.model); add('product.spec', ic.product.spec);
    add('product.standard', ic.product.standard); add('product.production_date', ic.production_date);
    add('product.expiry_date', ic.expiry_date); add('product.producer', orgName(rec.author));
    add('product.factory', ic.factory);
    break;
  }
  return f;
}

/** The page shows exactly `expected` in `elements` (each `data-vt` once). */
function compareShown(elements, expected, where) {
  const shown = new Map();
  for (const el of elements) {
    const key = el.dataset.vt;
    if (shown.has(key)) fail(`${where} shows ${key} twice`);
    shown.set(key, el.textContent);
  }
  for (const [k, v] of shown) {
    if (!expected.has(k)) fail(`${where} shows ${k} "${v}", which the bundle does not say`);
    if (expected.get(k) !== v) fail(`${where} shows ${k} "${v}", the bundle says "${expected.get(k)}"`);
  }
  for (const [k, v] of expected) if (!shown.has(k)) fail(`${where} leaves out ${k} "${v}"`);
}

function checkPage(b, orgs) {
  const orgName = (id) => (orgs.has(id) ? orgs.get(id).name : id);
  const outside = [...document.querySelectorAll('[data-vt]')].filter((el) => !el.closest('[data-vt-record]'));
  compareShown(outside, pageFacts(b, orgName), 'the page');
  const byIndex = new Map(b.records.map((r) => [String(r.log_index), r]));
  const seen = new Set();
  for (const row of document.querySelectorAll('[data-vt-record]')) {
    const i = row.dataset.vtRecord;
    const r = byIndex.get(i);
    if (!r) fail(`the page shows a record at log index ${i}, which the bundle does not hold`);
    if (seen.has(i)) fail(`the page shows the record at log index ${i} twice`);
    seen.add(i);
    compareShown(row.querySelectorAll('[data-vt]'), recordFacts(r.record.record, orgName), `record at log index ${i}`);
  }
  for (const i of byIndex.keys()) if (!seen.has(i)) fail(`the page leaves out the record at log index ${i}`);
}

// ---- running it ------------------------------------------------------------------------

/** JSON with every number read exactly, as a BigInt (all numbers in a bundle are u32/u64). */
function parseExact(text) {
  let lossy = false;
  const value = JSON.parse(text, (key, v, context) => {
    if (typeof v !== 'number') return v;
    if (context && typeof context.source === 'string') {
      if (!/^[0-9]+$/.test(context.source)) fail(`number ${context.source} is not an unsigned integer`);
      return BigInt(context.source);
    }
    if (!Number.isSafeInteger(v) || v < 0) lossy = true;
    return BigInt(Math.trunc(v));
  });
  if (lossy) fail("this browser cannot read the bundle's 64-bit numbers exactly; check it with `veritrace verify`");
  return value;
}

function show(state, text, detail) {
  const box = document.getElementById('vt-browser-verdict');
  box.className = `verdict ${state}`;
  box.dataset.state = state;
  document.getElementById('vt-browser-mark').textContent = state === 'ok' ? '✔' : '✘';
  document.getElementById('vt-browser-text').textContent = text;
  document.getElementById('vt-browser-detail').textContent = detail;
}

async function main() {
  const root = document.getElementById('vt');
  if (!root) return;
  try {
    const trust = JSON.parse(document.getElementById('vt-trust').textContent);
    const resp = await fetch(root.dataset.bundle, { cache: 'no-store', headers: { accept: 'application/json' } });
    if (!resp.ok) fail(`the bundle could not be fetched: HTTP ${resp.status}`);
    const bundle = parseExact(await resp.text());
    if (bundle.code !== root.dataset.code) fail(`the bundle is about ${bundle.code}, not ${root.dataset.code}`);
    const v = verifyBundle(bundle, trust);
    checkPage(bundle, v.orgs);
    show('ok',
      `verified in this browser against checkpoint at height ${v.height}, signed by ${v.signers.length} of ${v.validators} validators`,
      `signers: ${v.signers.join(', ')}; ${v.records} record signatures, inclusion proofs and state proofs checked against the genesis keys; everything this page shows matches the bundle`);
  } catch (e) {
    const why = e instanceof Failed ? e.message : `the check itself failed: ${e}`;
    show('fail', `NOT verified in this browser: ${why}`, 'what this page shows cannot be trusted');
  }
}

main();
