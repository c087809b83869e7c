"""SB3-aware helpers: distribution adapters and the actor/critic split of a policy's parameters."""
