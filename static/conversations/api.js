// The sidebar's JSON API (conversations/views.py, folder_views.py): list, change, delete and restore
// conversations; create, rename and delete folders.

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/**
 * @param {{urls: object, any_id: string, strings: object}} data the page's data (chat-data)
 */
export function conversationApi(data) {
  const detailUrl = (id) => data.urls.conversation_detail.replace(data.any_id, id);
  const restoreUrl = (id) => data.urls.conversation_restore.replace(data.any_id, id);
  // The page's folder URL is the one of folder 0.
  const folderUrl = (id) => data.urls.folder_detail.replace(/\/0\/$/, `/${id}/`);

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
    /**
     * One page of the list, of the conversations matching `query`, or of one folder's; an empty
     * cursor is the first page. The list's first page also has the folders and their first pages.
     */
    list: (cursor, query = "", folder = null) => {
      const params = new URLSearchParams();
      if (cursor) params.set("before", cursor);
      if (query) params.set("q", query);
      if (folder !== null) params.set("folder", String(folder));
      const url = data.urls.conversation_list;
      return requestJSON(params.toString() ? `${url}?${params}` : url);
    },
    update: (id, changes) => requestJSON(detailUrl(id), { method: "PATCH", body: changes }),
    remove: (id) => requestJSON(detailUrl(id), { method: "DELETE" }),
    restore: (id) => requestJSON(restoreUrl(id), { method: "POST" }),
    createFolder: (name) => requestJSON(data.urls.folder_list, { method: "POST", body: { name } }),
    renameFolder: (id, name) => requestJSON(folderUrl(id), { method: "PATCH", body: { name } }),
    removeFolder: (id) => requestJSON(folderUrl(id), { method: "DELETE" }),
  };
}
