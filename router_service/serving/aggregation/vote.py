"""Majority vote over normalised final answers; ties go to the expert with the best routing score."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from router_service.domain import ExpertReply, ExpertRequest
from router_service.routing.grading import canonical_answer
from router_service.serving.aggregation.base import AggregationResult, Aggregator, Claim, no_claim


class VoteAggregator(Aggregator):
    method = "vote"

    async def aggregate(
        self,
        request: ExpertRequest,
        replies: Sequence[ExpertReply],
        scores: Mapping[str, float],
        claim: Claim = no_claim,
    ) -> AggregationResult:
        if not replies:
            raise ValueError("no replies to vote over")
        groups: dict[str, list[ExpertReply]] = defaultdict(list)
        for reply in replies:
            groups[canonical_answer(reply.text)].append(reply)

        def strength(answer: str) -> tuple[int, float]:
            voters = groups[answer]
            return len(voters), max(scores.get(r.expert_id, float("-inf")) for r in voters)

        winner = max(groups, key=strength)
        best = max(groups[winner], key=lambda r: scores.get(r.expert_id, float("-inf")))
        return AggregationResult(
            text=best.text,
            finish_reason=best.finish_reason,
            prompt_tokens=sum(r.prompt_tokens for r in replies),
            completion_tokens=sum(r.completion_tokens for r in replies),
            details={
                "method": self.method,
                "winner": best.expert_id,
                "votes": {r.expert_id: canonical_answer(r.text) for r in replies},
                "support": len(groups[winner]),
            },
        )
