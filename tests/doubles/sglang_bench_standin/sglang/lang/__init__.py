"""TEST DOUBLE of sglang.lang (only what few_shot_gsm8k's double needs)."""
