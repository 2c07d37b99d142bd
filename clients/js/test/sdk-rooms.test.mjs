// The SDK's voice-room side (clients/js/callgate.js Room: data messages, roles and
// moderation; docs/protocol.md "Data messages" and "Moderation") against a
// scripted server: a fake WebSocket and fake peer connections injected
// through the options. No browser, no network.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { CallgateError, MAX_DATA_PAYLOAD_BYTES, Room } from '../callgate.js';
import { FakePC, FakeWS } from './sdk-fakes.mjs';

const URL = 'ws://server/rtc';
const me = (overrides = {}) => ({
  sid: 'PA_me', identity: 'fan', name: '', can_publish: false, can_subscribe: true, can_publish_data: true,
  tracks: [], metadata: '', attributes: {}, ...overrides,
});

/** A Room joined as `fan` (a listener) through fakes; the events it emits. */
async function joined() {
  FakeWS.all = [];
  FakePC.all = [];
  const room = new Room({ url: URL, token: 'ROOM-TOKEN', WebSocket: FakeWS, RTCPeerConnection: FakePC });
  const events = [];
  for (const name of ['participantUpdated', 'roomUpdated', 'data', 'error']) {
    room.on(name, (detail) => events.push({ name, detail }));
  }
  const joining = room.connect();
  const ws = FakeWS.all[0];
  ws.open();
  ws.recv({
    type: 'joined', protocol: 1,
    room: { name: 'ghazals', sid: 'RM_1', max_participants: 500, metadata: '{"title":"Ghazals"}' },
    participant: me(),
    participants: [{
      sid: 'PA_host', identity: 'host', name: 'Host', can_publish: true, can_subscribe: true, tracks: [],
      metadata: '', attributes: {},
    }],
    ice_servers: [],
  });
  await joining;
  return { room, ws, events };
}

test('a joined room shows its metadata, and room_updated replaces it', async () => {
  const { room, ws, events } = await joined();
  assert.equal(room.roomInfo.metadata, '{"title":"Ghazals"}');
  ws.recv({ type: 'room_updated', room: { name: 'ghazals', sid: 'RM_1', max_participants: 500, metadata: '{"title":"Part 2"}' } });
  assert.equal(room.roomInfo.metadata, '{"title":"Part 2"}');
  assert.deepEqual(events.map((e) => e.name), ['roomUpdated']);
  await room.leave(0);
});

test('sendData sends the documented message and refuses a payload over 16 KiB without sending it', async () => {
  const { room, ws } = await joined();
  room.sendData('hello', { topic: 'chat' });
  room.sendData('clap', { reliable: false, destinations: ['host'] });
  assert.deepEqual(ws.sent.filter((m) => m.type === 'data'), [
    { type: 'data', payload: 'hello', reliable: true, topic: 'chat' },
    { type: 'data', payload: 'clap', reliable: false, destinations: ['host'] },
  ]);
  // Multi-byte text is counted in bytes, as the server does.
  const tooBig = 'é'.repeat(MAX_DATA_PAYLOAD_BYTES / 2 + 1);
  assert.throws(() => room.sendData(tooBig), (e) => e instanceof CallgateError && e.code === 'payload_too_large');
  assert.equal(ws.sent.filter((m) => m.type === 'data').length, 2);
  await room.leave(0);
});

test('data from others arrive as "data" events with the sender', async () => {
  const { room, ws, events } = await joined();
  ws.recv({ type: 'data', from: 'host', from_sid: 'PA_host', topic: 'chat', payload: 'welcome', reliable: true });
  ws.recv({ type: 'data', from: 'host', from_sid: 'PA_host', topic: null, payload: 'x', reliable: false });
  assert.deepEqual(events.filter((e) => e.name === 'data').map((e) => e.detail), [
    { from: 'host', fromSid: 'PA_host', topic: 'chat', payload: 'welcome', reliable: true },
    { from: 'host', fromSid: 'PA_host', topic: null, payload: 'x', reliable: false },
  ]);
  await room.leave(0);
});

test('a raised hand and a host\'s moderation send the documented messages', async () => {
  const { room, ws } = await joined();
  room.setAttributes({ hand: 'raised' });
  room.updateParticipant('guest', { canPublish: true, attributes: { hand: '' } });
  room.muteParticipant('guest', { kind: 'audio' });
  room.muteParticipant('guest', { trackSid: 'TR_1', muted: false });
  room.removeParticipant('guest');
  const sent = ws.sent.filter((m) => !['join', 'candidate'].includes(m.type));
  assert.deepEqual(sent, [
    { type: 'set_attributes', attributes: { hand: 'raised' } },
    { type: 'update_participant', identity: 'guest', update: { can_publish: true, attributes: { hand: '' } } },
    { type: 'mute_participant', identity: 'guest', mute: { muted: true, kind: 'audio' } },
    { type: 'mute_participant', identity: 'guest', mute: { muted: false, track_sid: 'TR_1' } },
    { type: 'remove_participant', identity: 'guest' },
  ]);
  await room.leave(0);
});

test('participant_updated updates the participant; losing canPublish replaces our publisher transport', async () => {
  const { room, ws, events } = await joined();
  ws.recv({ type: 'participant_updated', participant: { ...me(), attributes: { hand: 'raised' } } });
  assert.deepEqual(room.localParticipant.attributes, { hand: 'raised' });
  // Promoted: we may publish on the transport we have.
  const pubBefore = room._pub;
  ws.recv({ type: 'participant_updated', participant: me({ can_publish: true }) });
  assert.equal(room.localParticipant.canPublish, true);
  assert.equal(room._pub, pubBefore, 'promotion keeps the (unused) publisher transport');
  // Demoted: the server closed our publisher transport; a fresh one waits.
  ws.recv({ type: 'participant_updated', participant: me({ can_publish: false }) });
  assert.equal(room.localParticipant.canPublish, false);
  assert.notEqual(room._pub, pubBefore);
  assert.equal(pubBefore.pc.closed, true, 'the old publisher peer connection is closed');
  // Someone else's change.
  ws.recv({ type: 'participant_updated', participant: { sid: 'PA_host', identity: 'host', name: 'The Host', can_publish: true, can_subscribe: true, tracks: [], metadata: '{"seat":1}', attributes: {} } });
  assert.equal(room.participants.get('PA_host').name, 'The Host');
  assert.equal(room.participants.get('PA_host').metadata, '{"seat":1}');
  assert.deepEqual(events.filter((e) => e.name === 'participantUpdated').map((e) => [e.detail.participant.identity, e.detail.local]), [
    ['fan', true], ['fan', true], ['fan', true], ['host', false],
  ]);
  await room.leave(0);
});
