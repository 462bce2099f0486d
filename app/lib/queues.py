"""The arq queues. Image decoding has one of its own, served by a worker with few slots, so a burst of
uploads can neither exhaust a worker's memory nor hold up the other jobs."""

from arq.constants import default_queue_name

DEFAULT_QUEUE = default_queue_name
IMAGE_QUEUE = "arq:queue:images"
QUEUES = (DEFAULT_QUEUE, IMAGE_QUEUE)
