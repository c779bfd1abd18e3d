"""Rendering chat messages into a raw prompt, in code we own.

We never render the chat_template stored inside a GGUF: it is Jinja from an untrusted file.
The in-process backend renders messages itself with a fixed, known format (ChatML, which
SmolLM2, Qwen and many instruction models use) and passes the raw prompt to llama.cpp.
Message content cannot forge turn boundaries: the special markers are stripped from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reporting.llm import Message


@dataclass(frozen=True)
class ChatFormat:
    """A turn-based prompt format. ``stop`` ends generation at the end of the reply."""

    name: str
    turn_start: str
    turn_end: str
    stop: tuple[str, ...]

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        parts = [
            f"{self.turn_start}{m.role}\n{self._clean(m.content)}{self.turn_end}\n"
            for m in messages
        ]
        if add_generation_prompt:
            parts.append(f"{self.turn_start}assistant\n")
        return "".join(parts)

    def _clean(self, text: str) -> str:
        for marker in (self.turn_start, self.turn_end):
            text = text.replace(marker, "")
        return text


CHATML = ChatFormat(
    name="chatml", turn_start="<|im_start|>", turn_end="<|im_end|>", stop=("<|im_end|>",)
)

CHAT_FORMATS: dict[str, ChatFormat] = {"chatml": CHATML}
