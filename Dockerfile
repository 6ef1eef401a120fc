# The TaskMaster image: one package, every component (`taskmaster coordinator|scheduler|worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY taskmaster ./taskmaster
RUN pip install '.[fast]' \
    && useradd --create-home --uid 10001 taskmaster

USER taskmaster
WORKDIR /home/taskmaster
ENV TASKMASTER_HOME=/home/taskmaster/.taskmaster
EXPOSE 8080 8081
CMD ["taskmaster", "--help"]
