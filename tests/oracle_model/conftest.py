"""Small synthetic data and one fitted model shared by the model tests: fits are the slow part."""

from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from oracle.features import Example
from oracle.model import ModelParams, TypeModel, fit
from oracle.synthetic import make_sales

# Fewer, larger boosting steps than the defaults: a coarser model, fitted in a fraction of the time.
FAST = ModelParams(learning_rate=0.1, max_iter=150)
TRAIN_ROWS = 2000


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """One OpenMP thread: on these small fits threads gain little, and on a busy machine their
    spin-waiting can slow scikit-learn down tenfold."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def sales() -> tuple[list[Example], np.ndarray]:
    return make_sales(3200, seed=3)


@pytest.fixture(scope="session")
def model(sales: tuple[list[Example], np.ndarray]) -> TypeModel:
    examples, prices = sales
    return fit("Synthetic", examples[:TRAIN_ROWS], prices[:TRAIN_ROWS], FAST)
