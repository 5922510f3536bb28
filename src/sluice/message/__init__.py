"""sluice.message: what a queued message is (envelope, recipients, ids), shared by every part.

Public names: Envelope, Recipient, RcptState, Notify, MessageId (re-exported from envelope).
"""

from __future__ import annotations

from sluice.message.envelope import Envelope, MessageId, Notify, RcptState, Recipient

__all__ = ["Envelope", "MessageId", "Notify", "RcptState", "Recipient"]
