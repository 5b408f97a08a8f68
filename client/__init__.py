"""Client library for tritonllm (and any tensorrtllm_backend) model repositories."""
