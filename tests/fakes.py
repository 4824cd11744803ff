"""A scripted engine for tests: deterministic answers, counts what it was asked."""

from promptgrad.engines import Engine


class ScriptedEngine(Engine):
    """Answers with ``reply(conversation, sample_index)``; records every conversation sent."""

    kind = "scripted"

    def __init__(self, reply, cache=None, model="scripted"):
        super().__init__(model, cache)
        self.reply = reply
        self.sent = []

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        self.sent.extend(conversations)
        return [[self.reply(c, i) for i in range(n)] for c in conversations]
