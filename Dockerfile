# The vgtrack image: workers, the one-shot enqueuer and the MLflow server all run from it.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY vgtrack ./vgtrack
RUN pip install .
COPY sweeps ./sweeps
CMD ["python", "-m", "vgtrack.worker", "--help"]
