"""Step 6: confidence, the one decide(), triggers and outcome signals, routed questions, traces, outbox, webhooks, respond()."""
