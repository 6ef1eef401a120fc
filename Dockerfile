# The TaskMaster image: one package, every component (`taskmaster coordinator|scheduler|worker`).
#
# BASE_IMAGE: an image with Python 3.11+ and its venv module. The public python:3.11-slim by
# default; where no image registry is reachable, deploy/images.sh builds one from Debian's
# archive. Wheels found in deploy/wheels/ (deploy/images.sh downloads them on the host) are
# installed without reaching a package index; with none there, pip uses the index.
# Classic-builder syntax only: Debian's docker.io 20.10 and docker-compose v1 build with it.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# marks what this stage leaves behind, for `docker image prune --filter label=...`
LABEL org.taskmaster.stage=build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/taskmaster
# the dependencies first: a change of the code alone reuses this layer
COPY deploy/requirements.txt deploy/wheels/ /wheels/
RUN if ls /wheels/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi; \
    /opt/taskmaster/bin/pip install -q -r /wheels/requirements.txt
COPY pyproject.toml README.md /src/
COPY proto /src/proto
COPY taskmaster /src/taskmaster
RUN if ls /wheels/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi; \
    /opt/taskmaster/bin/pip install -q --no-deps /src

# the image proper: the base and the virtual environment, no wheels, no sources, no pip cache
FROM ${BASE_IMAGE}
ENV PATH=/opt/taskmaster/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TASKMASTER_HOME=/home/taskmaster/.taskmaster
RUN useradd --create-home --uid 10001 taskmaster
COPY --from=build /opt/taskmaster /opt/taskmaster
USER taskmaster
WORKDIR /home/taskmaster
EXPOSE 8080 8081 9090
CMD ["taskmaster", "--help"]
