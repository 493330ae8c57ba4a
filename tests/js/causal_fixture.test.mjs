// Replays tests/fixtures/causal_histories.json (made by the Python rules, tests/causal_fixture.py)
// against the panel's causal client: after every step it must show what the Python client showed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { ClientCausalState, PARAMS_CHANNEL, VIEW_CHANNEL } from "../../daemon/panel/causal.js";

const fixture = JSON.parse(readFileSync(new URL("../fixtures/causal_histories.json", import.meta.url), "utf8"));

function apply(state, step) {
  switch (step.op) {
    case "edit_patch":
      assert.deepEqual(state.editPatch(step.node, step.patch).toJSON(), step.stamp, "stamp");
      break;
    case "edit_replace":
      assert.deepEqual(state.editReplace(step.node, step.params).toJSON(), step.stamp, "stamp");
      break;
    case "event": {
      const retiredAcks = step.retired_acks ?? null;
      assert.deepEqual(state.onEvent(step.node, step.channel, step.data, { retiredAcks }), step.shown[step.node][step.channel]);
      break;
    }
    case "pipeline":
      state.onPipeline(step.nodes);
      break;
    case "refused":
      state.onRefused(step.node, step.rev);
      break;
    case "forget_node":
      state.forgetNode(step.node);
      break;
    case "reconnected":
      state.reconnected(step.nonce);
      break;
    case "take_resend":
      assert.deepEqual(state.takeResend(), step.resend, "values to re-send");
      break;
    default:
      assert.fail(`unknown op ${step.op}: the fixture format changed`);
  }
}

test("the fixture is the format this replay knows", () => {
  assert.equal(fixture.format, 1);
  assert.ok(fixture.histories.length > 10);
});

describe("every recorded history shows the same after every step", () => {
  for (const history of fixture.histories) {
    test(history.name, () => {
      const state = new ClientCausalState(history.nonce);
      history.steps.forEach((step, index) => {
        const where = `step ${index} (${step.op})`;
        try {
          apply(state, step);
        } catch (error) {
          error.message = `${where}: ${error.message}`;
          throw error;
        }
        assert.deepEqual(state.nodeIds(), Object.keys(step.shown), `${where}: nodes`);
        for (const [nodeId, shown] of Object.entries(step.shown)) {
          assert.deepEqual(state.shown(nodeId, PARAMS_CHANNEL), shown.params, `${where}: ${nodeId} params`);
          assert.deepEqual(state.shown(nodeId, VIEW_CHANNEL), shown.view, `${where}: ${nodeId} view`);
        }
      });
    });
  }
});
