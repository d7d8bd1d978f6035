// The sidebar's JSON API (conversations/views.py): list, change and delete conversations.

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/**
 * @param {{urls: object, any_id: string, strings: object}} data the page's data (chat-data)
 */
export function conversationApi(data) {
  const detailUrl = (id) => data.urls.conversation_detail.replace(data.any_id, id);

  async function requestJSON(url, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) window.location.assign(data.urls.login);
    const payload = await response.json().catch(() => null);
    if (!response.ok) throw new Error(payload?.error?.detail || data.strings.request_failed);
    return payload;
  }

  return {
    /** One page of the list, or of the conversations matching `query`; an empty cursor is the first page. */
    list: (cursor, query = "") => {
      const params = new URLSearchParams();
      if (cursor) params.set("before", cursor);
      if (query) params.set("q", query);
      const url = data.urls.conversation_list;
      return requestJSON(params.toString() ? `${url}?${params}` : url);
    },
    update: (id, changes) => requestJSON(detailUrl(id), { method: "PATCH", body: changes }),
    remove: (id) => requestJSON(detailUrl(id), { method: "DELETE" }),
  };
}
