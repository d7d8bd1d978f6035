from django.http import HttpRequest, HttpResponse


def chat(request: HttpRequest) -> HttpResponse:
    return HttpResponse("chat")


conversation = conversation_list = conversation_detail = chat
