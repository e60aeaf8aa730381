-- The postgres image runs this once, on an empty volume: MLflow's backend store gets a database of its own
-- (the queue's tables live in the image's POSTGRES_DB; both use an alembic_version table).
CREATE DATABASE mlflow;
