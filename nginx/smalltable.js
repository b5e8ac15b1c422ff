// SmallTable's keys, decided by nginx alone (njs), so that writes are still accepted and
// refused correctly while ingestd, SQLite and Datasette are down (docs/keys.md).
//
// ingestd writes two maps under its state directory and reloads nginx when they change
// (ingestd/store/keys.py): keys.map (SHA-256 of a key -> "project scope key_id expires")
// and policy.map (project -> "o" owned, "w" writes need a key, "r" reads need a key).
// Only hashes are ever stored: the key presented is hashed ($smalltable_bearer_hash, by
// nginx/SmallTableKeys.pm) and looked up in the map (a hash table: its time does not
// depend on how much of a guess is right). The two commonest writes that every rule
// lets through are let through by maps in smalltable.conf, without this script.
import nodecrypto from 'crypto';
import fs from 'fs';

const KEY = /^stk_[0-9a-f]{32}$/;
const KEY_IN_URL = /stk_[0-9A-Za-z]{8,}/;
const BEARER = /^Bearer +(\S+) *$/;
const HOW = 'send it as the header "Authorization: Bearer stk_..."';
const AS = 'as the header "Authorization: Bearer stk_..."';
const WRITE_SCOPES = ['owner', 'write', 'read+write'];
const READ_SCOPES = ['owner', 'read', 'read+write'];

function sha256(text) {
    return nodecrypto.createHash('sha256').update(text).digest('hex');
}

// The key in "Authorization: Bearer KEY": null when the header is absent, "" when malformed.
function bearer(r) {
    const header = r.headersIn['Authorization'];
    if (header === undefined) {
        return null;
    }
    const match = BEARER.exec(header);
    return match && KEY.test(match[1]) ? match[1] : '';
}

// js_set $smalltable_path_project: the database a Datasette path names (/NAME/..., /NAME.json),
// since Datasette serves every database on every host; "" for paths that name none.
function pathProject(r) {
    if (r.uri.startsWith('/stream/') && r.variables.host === r.variables.smalltable_domain) {
        return '';  // the apex's stream API (issue 22): its topic is $smalltable_project
    }
    const match = /^\/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:[.\/?]|$)/.exec(r.uri);
    return match ? match[1] : '';
}

// The topic of a stream truncation's path, DELETE /stream/TOPIC/LOC (issue 22); "" for others.
function streamTopic(path) {
    const match = /^\/stream\/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\/[0-9]{1,19}$/.exec(path);
    return match ? match[1] : '';
}

// Datasette's lists of every database with sizes and row counts: the catalog shows them
// instead, without a private project's figures.
const EVERY_DATABASE = ['/.json', '/-/databases.json', '/index.json'];

// A new key for this request's answer, and its hash and id for the log line: made once.
function mint(r) {
    if (r.variables.smalltable_key_new) {
        return;
    }
    const key = 'stk_' + Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex');
    const hash = sha256(key);
    r.variables.smalltable_key_new = key;
    r.variables.smalltable_key_new_hash = hash;
    r.variables.smalltable_key_new_id = hash.slice(0, 12);
}

function refuse(r, status, error, fix, extra) {
    const body = Object.assign({ error: error, fix: fix }, extra || {});
    r.variables.smalltable_refusal_body = JSON.stringify(body);
    return String(status);
}

// The key presented, checked against the keys map: {scope, id} or a refusal (a string).
function grant(r, project) {
    const key = bearer(r);
    if (key === null) {
        return null;
    }
    if (!key) {
        return refuse(r, 401, 'malformed Authorization header', HOW + ' (stk_ and 32 hex digits)');
    }
    const entry = r.variables.smalltable_key_entry;
    if (!entry) {
        return refuse(r, 401, 'unknown or revoked key',
            'send a live key of this project ' + AS + ' (the owner lists them: GET /_project/keys)');
    }
    const fields = entry.split(' ');
    const owner = fields[0];
    const scope = fields[1];
    const id = fields[2];
    const expires = fields[3];
    if (expires !== '0' && Number(expires) * 1000 <= Date.now()) {
        return refuse(r, 401, 'the key has expired', 'ask the owner for a new key', { key_id: id });
    }
    if (owner !== project) {
        return refuse(r, 403, 'this key belongs to another project',
            'send it to its own project, or use a key of this one', { key_id: id });
    }
    return { scope: scope, id: id };
}

function needs(r, who, scopes, what, fix) {
    if (who === null) {
        return refuse(r, 401, what, fix);
    }
    if (scopes.indexOf(who.scope) < 0) {
        return refuse(r, 403, what + ': this ' + who.scope + ' key may not', fix, { key_id: who.id });
    }
    return '';
}

// js_set $smalltable_refusal: "" when nginx may go on with the request, else the status
// (the JSON reason is in $smalltable_refusal_body). Decided once per request.
function decide(r) {
    if (r.variables.smalltable_decided) {
        return r.variables.smalltable_decided === '-' ? '' : r.variables.smalltable_decided;
    }
    const answer = decision(r);
    r.variables.smalltable_decided = answer || '-';
    return answer;
}

function decision(r) {
    if (KEY_IN_URL.test(r.variables.request_uri)) {
        return refuse(r, 400, 'a key in the URL', 'never put a key in a URL (URLs are logged and kept ' +
            'in histories): ' + HOW + '; if it was a real key, revoke it');
    }
    const project = r.variables.smalltable_project;
    const policy = r.variables.smalltable_policy;
    const owned = policy.indexOf('o') >= 0;
    const path = r.uri;
    if (path === '/_project' && (r.method === 'POST' || r.method === 'PUT') && !owned) {
        // No owner key in force here (unclaimed, or a claim nginx has not reloaded for
        // yet): a claim gets a new key; with a key, ingestd decides in log order from
        // its hash, so a change right after the claim is not refused.
        const key = bearer(r);
        if (key === '') {
            return refuse(r, 401, 'malformed Authorization header', HOW + ' (stk_ and 32 hex digits)');
        }
        if (key === null) {
            mint(r);
        } else {
            r.variables.smalltable_key_presented = r.variables.smalltable_bearer_hash;
        }
        return '';
    }
    const who = grant(r, project);
    if (typeof who === 'string') {
        return who;
    }
    if (who) {
        r.variables.smalltable_key_used = who.scope + ':' + who.id;
    }
    const write = r.method === 'POST' || r.method === 'PUT' || r.method === 'DELETE';
    if (path === '/_project/keys' || path.startsWith('/_project/keys/')) {
        if (!owned) {
            return refuse(r, 401, 'the project has no owner key',
                'claim it first (POST /_project with an owner), or ask the operator: smalltable keys reset');
        }
        const refusal = needs(r, who, ['owner'], 'managing keys needs the owner key',
            'send the owner key ' + AS);
        if (!refusal && r.method === 'POST' && path === '/_project/keys') {
            mint(r);
        }
        return refusal;
    }
    if (path === '/_blobs' && write) {
        // Blobs (issue 23): an upload needs a write key whatever the write policy.
        return needs(r, who, WRITE_SCOPES, 'uploading a blob needs a write key of this project',
            'send a write key ' + AS + ' (the owner makes one: POST /_project/keys)');
    }
    if (r.method === 'DELETE' && streamTopic(path) !== '' && streamTopic(path) === project) {
        if (!owned) {
            return refuse(r, 401, 'the topic has no owner key',
                'claim the project first (POST /_project with an owner): truncating needs its owner key');
        }
        return needs(r, who, ['owner'], 'truncating a stream needs the owner key', 'send the owner key ' + AS);
    }
    if (path === '/_project' && (r.method === 'POST' || r.method === 'PUT')) {
        return needs(r, who, ['owner'], 'the project is claimed: changing its settings needs its owner key',
            'send the owner key ' + AS);
    }
    if (write) {
        if (policy.indexOf('w') >= 0 || who) {
            return needs(r, who, WRITE_SCOPES, 'writing to this project needs a write key',
                'send a write key ' + AS);
        }
        return '';
    }
    if (EVERY_DATABASE.indexOf(path) >= 0) {
        return refuse(r, 404, 'not served', 'Datasette\'s list of databases is not public: every project is listed at /_projects.json on the apex');
    }
    const named = r.variables.smalltable_path_project;
    const record = /^[0-9]+$|^[0-9a-f]{32}$/.test(named) && project !== '';
    if (named && named !== project && !record && r.variables.smalltable_path_policy.indexOf('r') >= 0) {
        return refuse(r, 403, 'project ' + named + ' is private',
            'read it at its own address, ' + named + '.' + r.variables.smalltable_domain + ', with a read key ' + AS);
    }
    if (policy.indexOf('r') >= 0) {
        return needs(r, who, READ_SCOPES, 'this project is private: reading it needs a read key',
            'send a read key ' + AS);
    }
    return '';
}

// Key-value buckets (issue 21; docs/kv.md). js_set $smalltable_kv: a write's conditional, TTL
// and index headers as JSON for the log line (ingestd decides them in log order): each
// header's values as a list (so one sent twice is seen), index headers as [name, value].
const KV_HEADERS = {
    'if-match': 'if_match',
    'x-weave-if-match': 'weave_if_match',
    'if-none-match': 'if_none_match',
    'x-ttl': 'ttl',
};
const KV_INDEX = /^x-(?:weave-)?index-/;

function kvHeaders(r) {
    if (!r.variables.request_uri.startsWith('/_kv/')) {
        return '';
    }
    const found = {};
    const index = [];
    const raw = r.rawHeadersIn;
    for (let i = 0; i < raw.length; i++) {
        const name = raw[i][0].toLowerCase();
        const field = KV_HEADERS[name];
        const prefix = KV_INDEX.exec(name);
        if (field) {
            found[field] = (found[field] || []).concat([raw[i][1]]);
        } else if (prefix) {
            index.push([name.slice(prefix[0].length), raw[i][1]]);
        }
    }
    if (index.length) {
        found.index = index;
    }
    try {
        return JSON.stringify(found);
    } catch (e) {
        return JSON.stringify({ error: 'a conditional, TTL or index header holds bytes that are not text' });
    }
}

// js_set $smalltable_kv_uri_encoded: the request URI with every byte that is not printable ASCII
// percent-encoded, for Datasette (its server refuses raw UTF-8 in a path): a key sent raw
// (curl sends "café" as it is) reads the same as one sent percent-encoded.
function kvUri(r) {
    const raw = r.rawVariables.request_uri;
    let out = '';
    for (let i = 0; i < raw.length; i++) {
        const b = raw[i];
        out += b > 0x20 && b < 0x7f ? String.fromCharCode(b) : '%' + (b < 16 ? '0' : '') + b.toString(16).toUpperCase();
    }
    return out;
}

// js_content of the refusal location: the status and JSON reason decide() chose.
function answer(r) {
    const status = Number(r.variables.smalltable_decided);
    if (status === 401) {
        r.headersOut['WWW-Authenticate'] = 'Bearer realm="smalltable"';
    }
    r.headersOut['Content-Type'] = 'application/json';
    r.return(status, r.variables.smalltable_refusal_body + '\n');
}

// ---- Blobs (issue 23; docs/blobs.md) ------------------------------------------------
// nginx kept the upload's body in a spool file (client_body_in_file_only): its SHA-256 is
// the blob's id, read here a chunk at a time, so that the answer can hold it. The log line
// carries the file's name and the hash, never the body; ingestd moves the file into the
// blob stores in log order.
const BLOB_CHUNK = 1048576;

function blobHash(path) {
    const hash = nodecrypto.createHash('sha256');
    const buffer = Buffer.alloc(BLOB_CHUNK);
    const fd = fs.openSync(path, 'r');
    let size = 0;
    try {
        for (;;) {
            const got = fs.readSync(fd, buffer, 0, BLOB_CHUNK, size);
            if (got <= 0) {
                break;
            }
            hash.update(got === BLOB_CHUNK ? buffer : buffer.subarray(0, got));
            size += got;
        }
    } finally {
        fs.closeSync(fd);
    }
    return { hex: hash.digest('hex'), size: size };
}

function json(r, status, body) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(status, JSON.stringify(body) + '\n');
}

// js_content of POST /_blobs: hash the spooled body, answer with the id.
function blobUpload(r) {
    const path = r.variables.request_body_file;
    if (!path) {
        return json(r, 400, { error: 'an empty upload: a blob needs a body',
            fix: 'send the file as the body: curl --data-binary @FILE -H "Authorization: Bearer stk_..." ' +
                 'https://PROJECT.DOMAIN/_blobs' });
    }
    const blob = blobHash(path);
    r.variables.smalltable_blob = blob.hex;
    r.variables.smalltable_blob_size = String(blob.size);
    const id = 'sha256-' + blob.hex;
    const url = r.variables.smalltable_scheme + '://' + r.variables.host + r.variables.smalltable_port_suffix +
        '/_blobs/' + id;
    r.headersOut['Location'] = url;
    json(r, 200, { id: id, size: blob.size, status: 'OK', url: url, request_id: r.variables.smalltable_id });
}

// js_set $smalltable_blob_type: the Content-Type a download is served with, from the
// ".type" file beside the first local copy (nginx/smalltable.conf.j2 lists the stores).
function blobType(r) {
    const id = r.variables.smalltable_blob_id;
    const dirs = (r.variables.smalltable_blob_dirs || '').split(' ');
    for (let i = 0; i < dirs.length; i++) {
        try {
            const type = fs.readFileSync(dirs[i] + '/' + id.slice(7, 9) + '/' + id + '.type', 'utf8');
            return type || 'application/octet-stream';
        } catch (e) {
            // not in this store: the next
        }
    }
    return 'application/octet-stream';
}

// js_set $smalltable_s3_auth: AWS Signature V4 of a download nginx fetches from the S3
// store when no local store has a copy (the location sets the path, host and region).
// The keys come from nginx's environment (env AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
// in nginx.conf), never from a file SmallTable writes; "" without them (S3 then refuses).
function hmac(key, data) {
    return nodecrypto.createHmac('sha256', key).update(data).digest();
}

function s3Auth(r) {
    const access = process.env.AWS_ACCESS_KEY_ID;
    const secret = process.env.AWS_SECRET_ACCESS_KEY;
    if (!access || !secret) {
        return '';
    }
    const amzDate = new Date().toISOString().replace(/[:-]|\.\d{3}/g, '');
    const day = amzDate.slice(0, 8);
    const region = r.variables.smalltable_s3_region;
    r.variables.smalltable_s3_date = amzDate;
    const canonical = [r.method, r.variables.smalltable_s3_path, '',
        'host:' + r.variables.smalltable_s3_host, 'x-amz-content-sha256:UNSIGNED-PAYLOAD',
        'x-amz-date:' + amzDate, '', 'host;x-amz-content-sha256;x-amz-date', 'UNSIGNED-PAYLOAD'].join('\n');
    const scope = day + '/' + region + '/s3/aws4_request';
    const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
    let key = hmac('AWS4' + secret, day);
    key = hmac(hmac(hmac(key, region), 's3'), 'aws4_request');
    const signature = nodecrypto.createHmac('sha256', key).update(toSign).digest('hex');
    return 'AWS4-HMAC-SHA256 Credential=' + access + '/' + scope +
        ', SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=' + signature;
}

export default { pathProject, decide, answer, kvHeaders, kvUri, blobUpload, blobType, s3Auth };
