import faiss
import pytest


@pytest.fixture
def one_faiss_thread():
    """Tiny K-means problems: one thread is fastest, and avoids OpenMP spin-waits on a busy machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
