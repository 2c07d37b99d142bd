// The SDK's call lifecycle (clients/js/callgate.js CallClient, and Room's `ring` /
// `callState`; docs/calls.md "Signaling messages") against a scripted
// server: a fake WebSocket injected through the options and mocked timers.
// No browser, no network.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  CallClient, CallgateError, Room, MAX_PRESENCE_WATCH, RECONNECT_SCHEDULE_MS, RECONNECT_STEADY_MS, RECONNECT_TRIES,
} from '../callgate.js';
import { FakePC, FakeWS } from './sdk-fakes.mjs';

const URL = 'ws://server/rtc';
const RING = {
  type: 'call_ring',
  call_id: 'CA_1',
  room: 'call-CA_1',
  caller: 'alice',
  caller_name: 'Alice',
  call_type: 'video',
  token: 'ROOM-TOKEN-host1',
  ring_timeout_s: 45,
  ring_ends_at_ms: 1_796_300_045_000,
};
const callState = (state, by, callees, endReason = null) => ({
  type: 'call_state', call_id: 'CA_1', state, by, end_reason: endReason, callees,
});

/** Everything the client emits, in order. */
function record(client) {
  const events = [];
  for (const name of [
    'connectionStateChanged', 'reconnecting', 'reconnected', 'ring', 'callState', 'ringEnded', 'presence',
    'error', 'disconnected',
  ]) {
    client.on(name, (detail) => events.push({ name, detail }));
  }
  return events;
}
const named = (events, name) => events.filter((e) => e.name === name).map((e) => e.detail);

/** A CallClient connected as `identity` through a fake WebSocket, on mocked timers. */
async function connected(t, { identity = 'host1', options = {} } = {}) {
  FakeWS.all = [];
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  t.mock.method(Math, 'random', () => 0);
  const client = new CallClient(URL, 'PRESENCE-TOKEN', { WebSocket: FakeWS, ...options });
  const events = record(client);
  const connecting = client.connect();
  const ws = FakeWS.all[0];
  ws.open();
  ws.recv({ type: 'connected', protocol: 1, identity });
  assert.equal(await connecting, client);
  return { client, events, ws };
}

test('connect() sends {"type":"connect","token","protocol":1} first and resolves on "connected" with the identity', async (t) => {
  FakeWS.all = [];
  const client = new CallClient(URL, 'PRESENCE-TOKEN', { WebSocket: FakeWS });
  const events = record(client);
  assert.equal(client.state, 'disconnected');
  const connecting = client.connect();
  assert.equal(client.connect(), connecting, 'a second connect() while connecting is the same promise');
  assert.equal(client.state, 'connecting');
  const ws = FakeWS.all[0];
  assert.equal(ws.url, URL);
  assert.deepEqual(ws.sent, [], 'nothing before the socket opens');
  ws.open();
  assert.deepEqual(ws.sent, [{ type: 'connect', token: 'PRESENCE-TOKEN', protocol: 1 }]);
  ws.recv({ type: 'connected', protocol: 1, identity: 'host1' });
  assert.equal(await connecting, client);
  assert.equal(client.state, 'connected');
  assert.equal(client.identity, 'host1');
  assert.deepEqual(named(events, 'connectionStateChanged'), [
    { state: 'connecting', previous: 'disconnected' },
    { state: 'connected', previous: 'connecting' },
  ]);
  assert.equal(FakeWS.all.length, 1);
});

test('connect() rejects with the close reason when the server refuses the token (4003 token_expired), and does not try again', async (t) => {
  FakeWS.all = [];
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  const client = new CallClient(URL, 'OLD-TOKEN', { WebSocket: FakeWS });
  const events = record(client);
  const connecting = client.connect();
  FakeWS.all[0].open();
  FakeWS.all[0].serverClose(4003, 'token_expired');
  await assert.rejects(connecting, (err) => {
    assert.ok(err instanceof CallgateError);
    assert.equal(err.code, 'token_expired');
    assert.equal(err.closeCode, 4003);
    return true;
  });
  assert.equal(client.state, 'disconnected');
  assert.deepEqual(named(events, 'disconnected'), [{ reason: 'token_expired', code: 4003 }]);
  t.mock.timers.tick(60_000);
  assert.equal(FakeWS.all.length, 1, 'no reconnect try after a refusal');
});

test('call_ring becomes one "ring" event with every documented field in camelCase, listed in client.rings', async (t) => {
  const { client, events, ws } = await connected(t);
  ws.recv(RING);
  assert.deepEqual(named(events, 'ring'), [{
    callId: 'CA_1',
    room: 'call-CA_1',
    caller: 'alice',
    callerName: 'Alice',
    callType: 'video',
    token: 'ROOM-TOKEN-host1',
    ringTimeoutS: 45,
    ringEndsAtMs: 1_796_300_045_000,
  }]);
  assert.deepEqual([...client.rings.keys()], ['CA_1']);
  // The same call's ring again (a reconnected connection is rung at once): not a second ring.
  ws.recv(RING);
  assert.equal(named(events, 'ring').length, 1);
  // Without caller_name the caller's identity is shown; call_type audio.
  ws.recv({ ...RING, call_id: 'CA_2', caller_name: undefined, call_type: 'audio' });
  const second = named(events, 'ring')[1];
  assert.equal(second.callerName, 'alice');
  assert.equal(second.callType, 'audio');
});

test('accept, reject (decline by default, or busy) and cancel send the documented JSON, one message each', async (t) => {
  const { client, ws } = await connected(t);
  const mark = ws.sent.length;
  client.accept('CA_1');
  client.reject('CA_2');
  client.reject('CA_3', 'busy');
  client.cancel('CA_4');
  assert.deepEqual(ws.sent.slice(mark), [
    { type: 'call_accept', call_id: 'CA_1' },
    { type: 'call_reject', call_id: 'CA_2', reason: 'decline' },
    { type: 'call_reject', call_id: 'CA_3', reason: 'busy' },
    { type: 'call_cancel', call_id: 'CA_4' },
  ]);
  assert.throws(() => client.reject('CA_5', 'later'), TypeError);
  assert.throws(() => client.accept(''), TypeError);
  assert.equal(ws.sent.length, mark + 4, 'refused calls send nothing');
});

test('accept/reject/cancel while not connected throw not_connected and send nothing', async (t) => {
  FakeWS.all = [];
  const client = new CallClient(URL, 'PRESENCE-TOKEN', { WebSocket: FakeWS });
  assert.throws(() => client.accept('CA_1'), (err) => err instanceof CallgateError && err.code === 'not_connected');
  client.connect().catch(() => {});
  FakeWS.all[0].open();
  assert.throws(() => client.cancel('CA_1'), (err) => err.code === 'not_connected', 'not before "connected"');
  assert.deepEqual(FakeWS.all[0].types(), ['connect']);
  client.close();
});

test('call_state becomes a "callState" event; accepting here ends the ring with answeredElsewhere false', async (t) => {
  const { client, events, ws } = await connected(t);
  ws.recv(RING);
  client.accept('CA_1');
  ws.recv(callState('accepted', 'host1', [{ identity: 'host1', ring: 'accepted' }]));
  assert.deepEqual(named(events, 'callState'), [{
    callId: 'CA_1', state: 'accepted', by: 'host1', endReason: null, callees: [{ identity: 'host1', ring: 'accepted' }],
  }]);
  assert.deepEqual(named(events, 'ringEnded'), [{ callId: 'CA_1', state: 'accepted', answeredElsewhere: false }]);
  assert.equal(client.rings.size, 0);
  // The call's end is a callState only: the ring had ended.
  ws.recv(callState('ended', 'alice', [{ identity: 'host1', ring: 'accepted' }], 'hung_up'));
  assert.deepEqual(named(events, 'callState').at(-1), {
    callId: 'CA_1', state: 'ended', by: 'alice', endReason: 'hung_up', callees: [{ identity: 'host1', ring: 'accepted' }],
  });
  assert.equal(named(events, 'ringEnded').length, 1);
});

test('answered elsewhere: "accepted" by our identity that this client did not accept ends the ring with answeredElsewhere true', async (t) => {
  const { client, events, ws } = await connected(t);
  ws.recv(RING);
  ws.recv(callState('accepted', 'host1', [{ identity: 'host1', ring: 'accepted' }]));
  assert.deepEqual(named(events, 'ringEnded'), [{ callId: 'CA_1', state: 'accepted', answeredElsewhere: true }]);
  assert.equal(client.rings.size, 0);
  // Our late accept is the server's already_answered: an error naming the call.
  ws.recv({ type: 'error', code: 'already_answered', message: 'answered on another device', call_id: 'CA_1' });
  assert.deepEqual(named(events, 'error'), [{ code: 'already_answered', message: 'answered on another device', callId: 'CA_1' }]);
});

test('a group call answered by another callee keeps our ring; the timeout ends it as missed, and a decline elsewhere as rejected', async (t) => {
  const { events, ws } = await connected(t);
  ws.recv(RING);
  ws.recv(callState('accepted', 'host2', [{ identity: 'host1', ring: 'ringing' }, { identity: 'host2', ring: 'accepted' }]));
  assert.deepEqual(named(events, 'ringEnded'), [], 'host2 answering does not stop host1 ringing');
  ws.recv(callState('accepted', null, [{ identity: 'host1', ring: 'missed' }, { identity: 'host2', ring: 'accepted' }]));
  assert.deepEqual(named(events, 'ringEnded'), [{ callId: 'CA_1', state: 'missed', answeredElsewhere: false }]);

  ws.recv({ ...RING, call_id: 'CA_9' });
  ws.recv({ ...callState('ringing', 'host1', [{ identity: 'host1', ring: 'rejected' }, { identity: 'host2', ring: 'ringing' }]), call_id: 'CA_9' });
  assert.deepEqual(named(events, 'ringEnded').at(-1), { callId: 'CA_9', state: 'rejected', answeredElsewhere: false });
});

test('the caller cancelling ends the ring as cancelled; a call_state without callees is read from state and by', async (t) => {
  const { events, ws } = await connected(t);
  ws.recv(RING);
  ws.recv(callState('cancelled', 'alice', [{ identity: 'host1', ring: 'cancelled' }], 'cancelled'));
  assert.deepEqual(named(events, 'ringEnded'), [{ callId: 'CA_1', state: 'cancelled', answeredElsewhere: false }]);

  ws.recv({ ...RING, call_id: 'CA_7' });
  ws.recv({ type: 'call_state', call_id: 'CA_7', state: 'accepted', by: 'host1', end_reason: null });
  assert.deepEqual(named(events, 'ringEnded').at(-1), { callId: 'CA_7', state: 'accepted', answeredElsewhere: true });
});

test('watchPresence sends presence_watch (replacing the list); "presence" events fill client.presence', async (t) => {
  const { client, events, ws } = await connected(t);
  client.watchPresence(['host1', 'host2', 'host1']);
  assert.deepEqual(ws.sent.at(-1), { type: 'presence_watch', identities: ['host1', 'host2'] });
  ws.recv({ type: 'presence', identity: 'host1', status: 'online' });
  ws.recv({ type: 'presence', identity: 'host2', status: 'offline' });
  ws.recv({ type: 'presence', identity: 'host1', status: 'busy' });
  ws.recv({ type: 'presence', identity: 'host2', status: 'asleep' }); // not a status: ignored
  assert.deepEqual(named(events, 'presence'), [
    { identity: 'host1', status: 'online' },
    { identity: 'host2', status: 'offline' },
    { identity: 'host1', status: 'busy' },
  ]);
  assert.deepEqual(Object.fromEntries(client.presence), { host1: 'busy', host2: 'offline' });
  client.watchPresence(['host2']);
  assert.deepEqual(ws.sent.at(-1), { type: 'presence_watch', identities: ['host2'] });
  assert.deepEqual(Object.fromEntries(client.presence), { host2: 'offline' }, 'unwatched identities are forgotten');
  const tooMany = Array.from({ length: MAX_PRESENCE_WATCH + 1 }, (_, i) => `u${i}`);
  assert.throws(() => client.watchPresence(tooMany), RangeError);
  assert.deepEqual(ws.sent.at(-1), { type: 'presence_watch', identities: ['host2'] });
});

test('a watch list set before connect() is sent right after "connected"', async (t) => {
  FakeWS.all = [];
  const client = new CallClient(URL, 'PRESENCE-TOKEN', { WebSocket: FakeWS });
  client.watchPresence(['host1']);
  const connecting = client.connect();
  FakeWS.all[0].open();
  assert.deepEqual(FakeWS.all[0].types(), ['connect'], 'not before "connected"');
  FakeWS.all[0].recv({ type: 'connected', protocol: 1, identity: 'alice' });
  await connecting;
  assert.deepEqual(FakeWS.all[0].sent, [
    { type: 'connect', token: 'PRESENCE-TOKEN', protocol: 1 },
    { type: 'presence_watch', identities: ['host1'] },
  ]);
  client.close();
});

test('after the socket drops the client reconnects at once (schedule[0] = 0 ms) with the tokenProvider\'s token and sends the watch list again', async (t) => {
  const { client, events, ws } = await connected(t, { options: { tokenProvider: () => 'FRESH-TOKEN' } });
  client.watchPresence(['host1', 'host2']);
  ws.serverClose(1006);
  assert.equal(client.state, 'reconnecting');
  assert.deepEqual(named(events, 'reconnecting'), [{ reason: 'signaling_lost' }]);
  assert.throws(() => client.accept('CA_1'), (err) => err.code === 'not_connected');
  t.mock.timers.tick(RECONNECT_SCHEDULE_MS[0]);
  await new Promise((r) => setImmediate(r)); // the tokenProvider's promise
  assert.equal(FakeWS.all.length, 2);
  const ws2 = FakeWS.all[1];
  ws2.open();
  assert.deepEqual(ws2.sent, [{ type: 'connect', token: 'FRESH-TOKEN', protocol: 1 }]);
  ws2.recv({ type: 'connected', protocol: 1, identity: 'host1' });
  assert.deepEqual(ws2.sent.slice(1), [{ type: 'presence_watch', identities: ['host1', 'host2'] }]);
  assert.equal(client.state, 'connected');
  assert.deepEqual(named(events, 'reconnected'), [{}]);
  // The ring the server repeats on the new connection is emitted (it was never shown).
  ws2.recv(RING);
  assert.equal(named(events, 'ring').length, 1);
});

test('reconnect tries wait 0, 0.3, 1.2, 2.7, 4.8 s then 7 s; after RECONNECT_TRIES failed tries the client is disconnected (connection_lost)', async (t) => {
  const { client, events, ws } = await connected(t);
  ws.serverClose(1006);
  const start = Date.now();
  const openedAt = [];
  for (let i = 0; i < RECONNECT_TRIES; i++) {
    const delay = RECONNECT_SCHEDULE_MS[i] ?? RECONNECT_STEADY_MS;
    if (delay > 0) {
      t.mock.timers.tick(delay - 1);
      await new Promise((r) => setImmediate(r));
      assert.equal(FakeWS.all.length, 1 + i, `try ${i + 1} not yet 1 ms before its time`);
    }
    t.mock.timers.tick(delay > 0 ? 1 : 0);
    await new Promise((r) => setImmediate(r));
    assert.equal(FakeWS.all.length, 2 + i, `try ${i + 1} opened after ${delay} ms more`);
    openedAt.push(FakeWS.all.at(-1).openedAt - start);
    FakeWS.all.at(-1).serverClose(1006);
  }
  let expected = 0;
  assert.deepEqual(openedAt, Array.from({ length: RECONNECT_TRIES }, (_, i) => (expected += RECONNECT_SCHEDULE_MS[i] ?? RECONNECT_STEADY_MS)));
  assert.equal(client.state, 'disconnected');
  assert.deepEqual(named(events, 'disconnected'), [{ reason: 'connection_lost', code: 1006 }]);
});

test('close() sends leave, closes with 1000 and does not reconnect', async (t) => {
  const { client, events, ws } = await connected(t);
  client.close();
  assert.equal(ws.sent.at(-1).type, 'leave');
  assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'left' });
  assert.equal(client.state, 'disconnected');
  assert.deepEqual(named(events, 'disconnected'), [{ reason: 'left', code: 1000 }]);
  t.mock.timers.tick(60_000);
  assert.equal(FakeWS.all.length, 1);
});

test('a Room emits "ring" and "callState" for call_ring and call_state on its own connection', async () => {
  FakeWS.all = [];
  FakePC.all = [];
  const room = new Room({ url: URL, token: 'ROOM-TOKEN', WebSocket: FakeWS, RTCPeerConnection: FakePC });
  const events = [];
  room.on('ring', (d) => events.push({ name: 'ring', detail: d }));
  room.on('callState', (d) => events.push({ name: 'callState', detail: d }));
  const joining = room.connect();
  const ws = FakeWS.all[0];
  ws.open();
  ws.recv({
    type: 'joined', protocol: 1, room: { name: 'demo', sid: 'RM_1', max_participants: 50 },
    participant: { sid: 'PA_me', identity: 'host1', name: '', can_publish: true, can_subscribe: true, tracks: [] },
    participants: [], ice_servers: [],
  });
  await joining;
  ws.recv(RING);
  ws.recv(callState('cancelled', 'alice', [{ identity: 'host1', ring: 'cancelled' }], 'cancelled'));
  assert.deepEqual(events, [
    { name: 'ring', detail: { callId: 'CA_1', room: 'call-CA_1', caller: 'alice', callerName: 'Alice', callType: 'video', token: 'ROOM-TOKEN-host1', ringTimeoutS: 45, ringEndsAtMs: 1_796_300_045_000 } },
    { name: 'callState', detail: { callId: 'CA_1', state: 'cancelled', by: 'alice', endReason: 'cancelled', callees: [{ identity: 'host1', ring: 'cancelled' }] } },
  ]);
  assert.equal(room.state, 'connected');
  await room.leave(0);
});
