"""The arq queues. Image decoding has one of its own, served by a worker with few slots, so a burst of
uploads can neither exhaust a worker's memory nor hold up the other jobs; webhook deliveries have
theirs, so receivers that answer slowly hold up no other job."""

from arq.constants import default_queue_name

DEFAULT_QUEUE = default_queue_name
IMAGE_QUEUE = "arq:queue:images"
WEBHOOK_QUEUE = "arq:queue:webhooks"
QUEUES = (DEFAULT_QUEUE, IMAGE_QUEUE, WEBHOOK_QUEUE)
